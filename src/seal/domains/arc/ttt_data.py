"""Test-time training data and augmented-inference queries, built from a task's demonstrations only.

TTT data (after the original): every demonstration takes a turn as the query, with the others as context
(leave-one-out), and with one more left out (leave-two-out); each of these is copied under every augmenter
the self-edit switched on; then each resulting task gets one variant with shuffled context order (and, if
any augmenter is on, a random colour permutation). Unlike the original, which deduplicated through Python
sets, everything here is ordered and seeded, so the same call always gives the same examples.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .augment import INFERENCE_VIEWS, IDENTITY, Transform, augmenters, random_colour_permutation, transform_example
from .grids import Grid, fits
from .serialize import Prompt, example_pair_text, task_prompt
from .tasks import Example

MAX_EXAMPLES = 250  # the paper's cap on TTT examples per self-edit

Pair = tuple[tuple[Example, ...], Example]  # (context demonstrations, query whose output is the answer)


@dataclass(frozen=True)
class TTTExample:
    """One training sequence: the prompt, and the answer the loss may be restricted to."""
    prompt: Prompt
    answer: str


def leave_n_out(demos: Sequence[Example], n: int) -> list[Pair]:
    """Each demo as the query, with every way of dropping n-1 of the others; the rest (in order) is the context.

    n = 1 gives N pairs, n = 2 gives N(N-1); with two demos, leave-two-out leaves an empty context."""
    pairs = []
    for i, query in enumerate(demos):
        others = [j for j in range(len(demos)) if j != i]
        for dropped in itertools.combinations(others, n - 1):
            pairs.append((tuple(demos[j] for j in others if j not in dropped), query))
    return pairs


def _map_pair(pair: Pair, fn: Callable[[Grid], Grid]) -> Pair:
    context, query = pair
    return tuple(transform_example(e, fn) for e in context), transform_example(query, fn)


def _fits(pair: Pair) -> bool:
    context, query = pair
    return all(fits(e.input) and fits(e.output) for e in (*context, query))


def ttt_pairs(demos: Sequence[Example], groups: Iterable[str], leave_n: Sequence[int] = (1, 2),
              seed: int = 0) -> list[Pair]:
    """The deduplicated (context, query) pairs before the size filter and the cap, in a fixed order."""
    transforms = augmenters(groups, seed)
    rng = random.Random(seed)
    initial = [pair for n in leave_n for pair in leave_n_out(demos, n)]
    augmented = [aug for t in transforms for aug in (_map_pair(p, t.apply) for p in initial) if _fits(aug)]
    tasks = list(dict.fromkeys(initial + augmented))
    variants = []
    for pair in tasks:
        if transforms:  # as in the original, colours are permuted only when some augmenter is switched on
            used = {c for e in (*pair[0], pair[1]) for g in (e.input, e.output) for row in g for c in row}
            pair = _map_pair(pair, random_colour_permutation(rng, used).apply)
        context, query = pair
        variants.append((tuple(rng.sample(context, len(context))), query))
    return list(dict.fromkeys(tasks + variants))


def build_ttt_examples(demos: Sequence[Example], groups: Iterable[str], leave_n: Sequence[int] = (1, 2),
                       seed: int = 0, max_examples: int = MAX_EXAMPLES, max_length: int | None = None,
                       length_fn: Callable[[str], int] = len) -> list[TTTExample]:
    """TTT examples for one task's demonstrations under the augmentation `groups` a self-edit chose.

    Examples whose prompt + answer is longer than `max_length` (measured by `length_fn`: characters by
    default, or pass a tokenizer's count) are dropped; if more than `max_examples` remain, a seeded shuffle
    picks which."""
    pairs = ttt_pairs(demos, groups, leave_n, seed)
    examples = [TTTExample(*example_pair_text(context, query)) for context, query in pairs]
    if max_length is not None:
        examples = [e for e in examples if length_fn(e.prompt.text + e.answer) <= max_length]
    if len(examples) > max_examples:
        random.Random(seed).shuffle(examples)
        examples = examples[:max_examples]
    return examples


@dataclass(frozen=True)
class Query:
    """An inference prompt made under `view`; the answer is mapped back with `view.inverse` before voting."""
    view: Transform
    prompt: Prompt


def inference_queries(demos: Sequence[Example], test_input: Grid, seed: int = 0, n_permutations: int = 2,
                      views: Sequence[Transform] = INFERENCE_VIEWS, max_length: int | None = None,
                      length_fn: Callable[[str], int] = len) -> list[Query]:
    """The augmented queries for one test input (after the original): leave-one-out contexts, each also in
    `n_permutations` shuffled orders, plus one randomly chosen context under each geometric view.

    Like TTT data, the model never sees all demos at once. Views that reproduce an existing query (a
    symmetric task) are skipped. If `max_length` leaves nothing, leave-two-out contexts are tried too."""
    rng = random.Random(seed)
    for leave in ((1,), (1, 2)):
        contexts = [ctx for n in leave for ctx, _ in leave_n_out(demos, n)] if len(demos) > 1 else [tuple(demos)]
        shuffled = [tuple(rng.sample(ctx, len(ctx))) for ctx in contexts for _ in range(n_permutations)]
        tasks: dict[Pair, Transform] = {(ctx, Example(test_input, None)): IDENTITY
                                        for ctx in dict.fromkeys(contexts + shuffled)}
        plain = list(tasks)
        for view in views:
            tasks.setdefault(_map_pair(rng.choice(plain), view.apply), view)
        queries = [Query(view, task_prompt(ctx, query.input)) for (ctx, query), view in tasks.items()]
        if max_length is not None:
            queries = [q for q in queries if length_fn(q.prompt.text) <= max_length]
        if queries:
            break
    return queries

"""Constrained decoding of ARC self-edits: the model samples only token sequences that spell a valid self-edit.

Why: the paper samples free text and resamples until `json.loads` accepts it, with no cap. Its 1B model writes
valid JSON most of the time; the built-in 135M model almost never does (measured: 0 of 8 samples valid), so
free sampling gives no learning signal and rejection sampling never ends. Here every value the self-edit can
take comes from a finite menu (the four booleans, the two strategies, a grid of learning rates, whole epochs),
each complete self-edit is one canonical JSON string, and the tokenizations of all of them form a trie. At each
step the sampler may only pick a token that keeps the text on the trie, so what comes out is always one of
the menu's self-edits, drawn from the model's own distribution renormalised over the allowed tokens. The
choice is still the model's, the ReST-EM finetune still teaches it (on the same canonical text), and the
schema check still runs on the result. `--self-edit-decoding free` keeps the paper's way.
"""
from __future__ import annotations

import itertools
import json
from typing import Callable, Sequence

LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
EPOCHS = tuple(range(1, 6))
STRATEGIES = ("train_using_all_tokens", "train_using_output_tokens")
FLAGS = ("use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations", "use_repeat_augmentations")


def menu() -> list[dict]:
    """Every self-edit the constrained sampler can produce, in a fixed order."""
    out = []
    for bits in itertools.product((True, False), repeat=len(FLAGS)):
        for strategy, lr, epochs in itertools.product(STRATEGIES, LEARNING_RATES, EPOCHS):
            out.append({"data_generation": dict(zip(FLAGS, bits)),
                        "training": {"strategy": strategy, "learning_rate": lr, "num_train_epochs": epochs}})
    return out


def canonical(config: dict) -> str:
    """The one text a menu self-edit is written as (json.dumps with its default separators, keys in order)."""
    return json.dumps(config)


class TokenTrie:
    """The allowed next tokens after any prefix of the tokenized menu texts (each followed by `end_id`)."""

    def __init__(self, texts: Sequence[str], encode: Callable[[str], list[int]], end_id: int):
        self.end_id = end_id
        self.depth = 0   # tokens in the longest text, its end included: enough new tokens for any of them
        children: dict[tuple[int, ...], set[int]] = {}
        for text in texts:
            ids = list(encode(text)) + [end_id]
            self.depth = max(self.depth, len(ids))
            for i, tok in enumerate(ids):
                children.setdefault(tuple(ids[:i]), set()).add(tok)
        self._lists = {k: sorted(v) for k, v in children.items()}

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that keep `prefix` on the trie; past the end (or off it, which the sampler never goes) only
        `end_id`, so a finished row just pads."""
        return self._lists.get(tuple(prefix), [self.end_id])


def self_edit_trie(tokenizer) -> TokenTrie:
    eos = tokenizer.eos_token_id
    return TokenTrie([canonical(c) for c in menu()],
                     lambda t: tokenizer(t, add_special_tokens=False)["input_ids"], eos)

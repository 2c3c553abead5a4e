"""The one sampler of self-edits: k per context, from the loaded model (free or constrained decoding) or from an
OpenAI-compatible endpoint, stored in chunks as they finish.

A chunk's seed comes from the run seed, the recipe's sample template and the chunk's first (context, sample),
so a rerun samples only the missing chunks and draws what the first run would have.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..engine.seeds import seed_of

CHUNK = 16   # self-edits generated together; part of what a chunk's seed means, so not a tunable


def sample_self_edits(run, lm, domain, round_: int, source: str, contexts: Sequence[Any], k: int, gen,
                      template: Sequence[str], endpoint: str | None = None, **seed_fields) -> dict[str, list[str]]:
    """k self-edits per context: {context id: [text of sample 0, ...]}. `source` names them in the store (the
    condition), `gen` is the run's GenerationSection, `seed_fields` fill the template beside context and sample."""
    from tqdm.auto import tqdm

    from ..engine.generation import generate, generate_openai

    store = run.store
    stored = store.self_edits(round_, source)
    todo = [(c, s) for c in contexts for s in range(k) if (c.id, s) not in stored]
    allowed, max_new = None, gen.max_new_tokens
    if todo and endpoint is None and gen.decoding == "constrained":
        constraint = domain.self_edit_constraint(lm.tokenizer)
        if constraint is None:
            raise ValueError(f"the {domain.name} domain has no constrained decoding; use generation.decoding=free")
        allowed, max_new = constraint.allowed, max(max_new, constraint.min_new_tokens)  # never cut one short
    with run.timing(f"generate:{source}:{round_}"), \
            tqdm(total=len(todo), desc=f"self-edits [{source} r{round_}]", unit="edit",
                 disable=not run.cfg.run.show_progress) as bar:
        for i in range(0, len(todo), CHUNK):
            part = todo[i:i + CHUNK]
            if endpoint is None:
                prompts = [domain.self_edit_prompt(c) for c, _ in part]
                seed = seed_of(run.cfg.run.seed, template, condition=source, round=round_, context=part[0][0].id,
                               sample=part[0][1], **seed_fields)
                texts = generate(lm, prompts, max_new_tokens=max_new, temperature=gen.temperature, top_p=gen.top_p,
                                 batch_size=CHUNK, seed=seed, allowed_tokens=allowed)
            else:
                prompts = [domain.self_edit_message(c) for c, _ in part]
                texts = generate_openai(gen.endpoint_url, endpoint, prompts, key_env=gen.endpoint_key_env,
                                        max_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                        top_p=gen.top_p)
            store.add_self_edits(round_, source, [(c.id, s, p, t) for (c, s), p, t in zip(part, prompts, texts)])
            bar.update(len(part))
    stored = store.self_edits(round_, source)
    return {c.id: [stored[(c.id, s)] for s in range(k)] for c in contexts}

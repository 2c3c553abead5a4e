"""Batched text generation with the embedded transformers model, each row optionally through its own adapter.

Rows are sorted (by adapter, then by prompt length) and cut into batches (left padding); the KV cache is on.
Results come back in the caller's order.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .models import LoadedModel


def render_prompt(lm: LoadedModel, user_text: str, assistant_prefix: str = "", system: str | None = None,
                  use_chat: bool | None = None) -> str:
    """The model's chat template around `user_text` when it has one (and `use_chat` is not False), else the
    plain text. `assistant_prefix` starts the reply (the model continues from it)."""
    chat = lm.has_chat_template if use_chat is None else use_chat
    if not chat:
        return user_text + assistant_prefix
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    rendered = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return rendered + assistant_prefix


@torch.no_grad()
def generate(lm: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 32, temperature: float = 0.0,
             top_p: float = 1.0, batch_size: int = 32, seed: int = 0, pack=None,
             adapter_index: Sequence[int] | None = None, stop_at_newline: bool = False,
             progress: Callable[[int], None] | None = None,
             allowed_tokens: Callable[[list[int]], list[int]] | None = None) -> list[str]:
    """Generate a completion for every prompt. Greedy when temperature is 0.

    With `pack` and `adapter_index`, row j is computed through adapter adapter_index[j] (-1: the base).
    With `allowed_tokens`, each step may only pick a token it returns for the completion so far
    (constrained decoding; transformers' `prefix_allowed_tokens_fn`)."""
    tok = lm.tokenizer
    if adapter_index is not None and len(adapter_index) != len(prompts):
        raise ValueError("adapter_index must have one entry per prompt")
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    # Rows of one adapter together, so that a batch holds few adapters (each adapter's weights are read once per
    # forward); within that, longest first, so short prompts do not pay for long ones.
    group = adapter_index if adapter_index is not None else [0] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (group[i], -len(encoded[i])))
    out: list[str] = [""] * len(prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos_ids = _stop_ids(lm)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            seq = encoded[i]
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
        kwargs = dict(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), max_new_tokens=max_new_tokens,
                      pad_token_id=pad, eos_token_id=eos_ids)
        if allowed_tokens is not None:
            kwargs["prefix_allowed_tokens_fn"] = lambda _b, seq, w=width: allowed_tokens(seq[w:].tolist())
        if temperature > 0:
            torch.manual_seed(seed + start)
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if pack is not None and adapter_index is not None:
            with pack.route([adapter_index[i] for i in rows]):
                gen = lm.model.generate(**kwargs)
        else:
            gen = lm.model.generate(**kwargs)
        for r, i in enumerate(rows):
            text = tok.decode(gen[r, width:], skip_special_tokens=True)
            if stop_at_newline:
                text = text.strip().split("\n", 1)[0]
            out[i] = text.strip()
        if progress:
            progress(len(rows))
    return out


def _stop_ids(lm: LoadedModel) -> list[int]:
    tok = lm.tokenizer
    ids = {tok.eos_token_id}
    for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid >= 0:
            ids.add(tid)
    gen_cfg = getattr(lm.model, "generation_config", None)
    if gen_cfg is not None and gen_cfg.eos_token_id is not None:
        e = gen_cfg.eos_token_id
        ids.update(e if isinstance(e, list) else [e])
    return sorted(i for i in ids if i is not None)


def generate_openai(base_url: str, model: str, prompts: Sequence[str], *, key_env: str = "OPENAI_API_KEY",
                    max_tokens: int = 1024, temperature: float = 1.0, top_p: float = 0.95, timeout: float = 300.0,
                    retries: int = 3, concurrency: int = 4) -> list[str]:
    """Self-edits from an OpenAI-compatible /chat/completions endpoint (each prompt as one user message).
    Retries with back-off; a prompt that still fails raises, naming the endpoint (never the key)."""
    import os
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    key = os.environ.get(key_env, "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = base_url.rstrip("/") + "/chat/completions"

    def one(client, prompt):
        last = None
        for attempt in range(retries):
            try:
                r = client.post(url, headers=headers, json={
                    "model": model, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p})
                r.raise_for_status()
                return (r.json()["choices"][0]["message"]["content"] or "").strip()
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
                last = e
                _time.sleep(min(8.0, 2.0 * (attempt + 1)) if attempt + 1 < retries else 0)
        msg = str(last).replace(key, "***") if key else str(last)
        raise RuntimeError(f"generation endpoint {base_url} failed after {retries} attempts: {msg}")

    with httpx.Client(timeout=timeout) as client, ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda p: one(client, p), prompts))

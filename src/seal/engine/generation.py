"""Batched text generation with the embedded transformers model, each row optionally through its own adapter.

Rows are sorted (by adapter, then by prompt length) and cut into batches (left padding); the KV cache is on.
Results come back in the caller's order.

Greedy answers go through seal's own decode loop (`greedy_decode`), sampling and constrained decoding through
transformers' `generate`. Why a loop of our own: `generate` runs a batch until its slowest row is done, and a
row that has its answer (the first line, for short-answer questions) keeps decoding to the token budget; and
it recomputes the prompt's shared prefix (the chat template's system turn, the instructions) for every row.
The loop drops a row from the batch and its key/value cache as soon as its answer is fixed, and computes the
prefix shared by a batch's prompts once per adapter in the batch (LoRA on the attention projections changes
its keys and values, so only rows of one adapter share it). `decoder="hf"` keeps `generate` for comparison.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Callable, Sequence

import torch

from .models import LoadedModel
from .protocol import clean_text


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
             allowed_tokens: Callable[[list[int]], list[int]] | None = None, decoder: str = "seal") -> list[str]:
    """Generate a completion for every prompt. Greedy when temperature is 0.

    With `pack` and `adapter_index`, row j is computed through adapter adapter_index[j] (-1: the base).
    With `allowed_tokens`, each step may only pick a token it returns for the completion so far
    (constrained decoding; transformers' `prefix_allowed_tokens_fn`). With `stop_at_newline` the answer is the
    first line of the stripped completion. Greedy decoding without constraints uses `greedy_decode` unless
    `decoder="hf"`."""
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
    own = decoder == "seal" and temperature == 0 and allowed_tokens is None
    answered = None
    if own and stop_at_newline:
        answered = lambda gen: "\n" in tok.decode(gen, skip_special_tokens=True).lstrip()  # noqa: E731
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if own:
            routes = [adapter_index[i] for i in rows] if pack is not None and adapter_index is not None else None
            gens = greedy_decode(lm.model, [encoded[i] for i in rows], max_new_tokens=max_new_tokens,
                                 stop_ids=eos_ids, done=answered, pack=pack, adapters=routes, pad_id=pad)
            for i, g in zip(rows, gens):
                out[i] = _answer_text(tok.decode(g, skip_special_tokens=True), stop_at_newline)
            if progress:
                progress(len(rows))
            continue
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
            out[i] = _answer_text(tok.decode(gen[r, width:], skip_special_tokens=True), stop_at_newline)
        if progress:
            progress(len(rows))
    return out


def _answer_text(text: str, stop_at_newline: bool) -> str:
    if stop_at_newline:
        text = text.strip().split("\n", 1)[0]
    return text.strip()


# A shared prefix shorter than this is not worth a forward pass of its own.
MIN_SHARED_PREFIX = 4


@functools.lru_cache(maxsize=None)
def _cache_arg(forward_type) -> str:
    import inspect
    return "cache" if "cache" in inspect.signature(forward_type.forward).parameters else "past_key_values"


def _cache_kw(model) -> str:
    """The forward argument that takes the key/value cache: `cache` from transformers 5.x, before that
    `past_key_values` (the GPU machine's transformers may be older)."""
    return _cache_arg(type(model))           # read once per model class, not per batch


def _new_cache(model):
    from transformers import DynamicCache
    try:
        return DynamicCache(config=model.config)
    except TypeError:                     # transformers < 4.56 takes no config
        return DynamicCache()


@torch.no_grad()
def greedy_decode(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                  done: Callable[[list[int]], bool] | None = None, pack=None, adapters: Sequence[int] | None = None,
                  pad_id: int = 0) -> list[list[int]]:
    """Greedy completions (token ids) of one batch of tokenized prompts. A row leaves the batch, and its
    key/value cache, at a stop token, at `max_new_tokens`, or as soon as `done(its tokens so far)` is true.
    The prompts' common prefix is computed once per distinct adapter (`adapters[j]`: row j's adapter in
    `pack`, -1 the base) and its cache copied to the rows; the rest is left-padded after it, with the padding
    masked and positions counted over real tokens only, as transformers' `generate` counts them."""
    n = len(prompts)
    dev = next(model.parameters()).device
    routes = list(adapters) if adapters is not None else None
    stop = set(stop_ids)
    shared = _common_prefix(prompts)
    cache = _new_cache(model)
    ckw = _cache_kw(model)
    if shared >= MIN_SHARED_PREFIX:
        distinct = sorted(set(routes)) if routes is not None else [-1]
        ids = torch.tensor([list(prompts[0][:shared])] * len(distinct), device=dev)
        with _routed(pack, distinct if routes is not None else None):
            model(input_ids=ids, use_cache=True, logits_to_keep=1, **{ckw: cache})
        if routes is not None or n > 1:
            where = [distinct.index(a) for a in routes] if routes is not None else [0] * n
            cache.batch_select_indices(torch.tensor(where, device=dev))
    else:
        shared = 0
    tails = [list(p[shared:]) for p in prompts]
    width = max(len(t) for t in tails)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for r, t in enumerate(tails):
        ids[r, width - len(t):] = torch.tensor(t)
        mask[r, shared + width - len(t):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    live = list(range(n))               # rows still decoding, as indices into the batch
    out: list[list[int]] = [[] for _ in range(n)]
    for step in range(max_new_tokens):
        with _routed(pack, [routes[r] for r in live] if routes is not None else None):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1, **{ckw: cache}).logits[:, -1]
        nxt = logits.argmax(-1).tolist()
        keep = []
        for slot, (r, t) in enumerate(zip(live, nxt)):
            out[r].append(t)
            if t not in stop and step + 1 < max_new_tokens and not (done is not None and done(out[r])):
                keep.append(slot)
        if not keep:
            break
        if len(keep) < len(live):
            sel = torch.tensor(keep, device=dev)
            cache.batch_select_indices(sel)
            mask, positions = mask[sel], positions[sel]
            live = [live[s] for s in keep]
            nxt = [nxt[s] for s in keep]
        ids = torch.tensor(nxt, device=dev)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return out


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the prompts' common token prefix, leaving every prompt at least one token of its own."""
    first = prompts[0]
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def _routed(pack, index):
    return pack.route(index) if pack is not None and index is not None else nullcontext()


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


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint that still fails after its retries, or refuses the request: a clear error for
    the user (the run's finished work is stored, and the same command resumes once the endpoint answers)."""


def generate_openai(base_url: str, model: str, prompts: Sequence[str], *, key_env: str = "OPENAI_API_KEY",
                    max_tokens: int = 1024, temperature: float = 1.0, top_p: float = 0.95, timeout: float = 300.0,
                    retries: int = 3, concurrency: int = 4, backoff: float = 1.0) -> list[str]:
    """Self-edits from an OpenAI-compatible /chat/completions endpoint (each prompt as one user message), through
    the shared client (`openai_client`): `retries` attempts per prompt, back-off from `backoff` seconds; a prompt
    that still fails raises EndpointError naming the endpoint (never the key) and stops the others."""
    from .openai_client import ChatEndpoint

    endpoint = ChatEndpoint(base_url, model, key_env, what="generation endpoint", error=EndpointError,
                            timeout=timeout, attempts=retries, backoff=backoff)
    texts = endpoint.chat_all([[{"role": "user", "content": p}] for p in prompts], concurrency,
                              max_tokens=max_tokens, temperature=temperature, top_p=top_p)
    # Untrusted text: a "\\ud800" escape in the JSON reply would stop the tokenizer and the store.
    return [clean_text(t).strip() for t in texts]

"""Packed training: a step's rows as one sequence, attention kept inside each row, and the output head only at
the positions that have a target.

Why packing: the batched trainer padded a micro-batch's rows to its longest; packed, every token is real and
each Linear runs one [tokens, in] matmul per micro-batch. Positions restart at 0 in each row (so rotary
embeddings see what they would see unpacked), and the attention is variable-length: torch's `varlen_attn`
(flash attention) on CUDA in half precision, else one causal `scaled_dot_product_attention` per row. A dense
block-diagonal mask would cost tokens^2 memory and attention work per layer; per-row attention costs the sum
of the rows' squares, as unpacked.

Why a hand-written head loss: the frozen output head (49k words for SmolLM2) over every position is the
largest single matmul of a step, and autograd keeps its [positions, vocabulary] logits and their gradient.
`head_loss` computes the cross-entropy in chunks of positions and, in the same pass, the gradient with
respect to the hidden states (softmax minus one-hot, times the head), so no [positions, vocabulary] tensor
outlives its chunk and the log-softmax backward pass disappears. transformers' `logits_to_keep` trims the
head too, but leaves the full-size logits and their backward to autograd. It applies only when the head's
weights are frozen, and only to models whose logits are the head of the backbone's hidden states, which
`fused_head_ok` checks numerically once per model.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn import functional as F

ATTENTION = "seal_varlen"
HEAD_CHUNK = 1024          # positions per chunk of the head loss: [1024, 49152] fp32 logits is 200 MB


def _varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention interface: query [1, H, T, D], key/value [1, Hkv, T, D] of one packed sequence;
    `cu_seq_lens_q` (the flash-attention name) gives the row boundaries. Returns [1, T, H, D]."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or attention_mask is not None or query.shape[0] != 1:
        raise RuntimeError("seal's packed attention needs one packed sequence with cu_seq_lens_q and no mask")
    gqa = query.shape[1] != key.shape[1]
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and _has_varlen():
        from torch.nn.attention.varlen import varlen_attn
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))         # [T, H, D]
        max_len = int(kwargs.get("max_length_q") or int((cu[1:] - cu[:-1]).max()))
        out = varlen_attn(q, k, v, cu.to(torch.int32), cu.to(torch.int32), max_len, max_len, scale=scaling,
                          window_size=(-1, 0), enable_gqa=gqa)
        return out.unsqueeze(0), None
    bounds = cu.tolist()
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        parts.append(F.scaled_dot_product_attention(query[:, :, lo:hi], key[:, :, lo:hi], value[:, :, lo:hi],
                                                    is_causal=True, scale=scaling, enable_gqa=gqa,
                                                    dropout_p=dropout if module.training else 0.0))
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def _has_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (torch >= 2.9, CUDA only)
        return True
    except ImportError:
        return False


def _no_mask(*args, **kwargs):
    return None          # the packed attention takes its rows from cu_seq_lens_q, not from a mask


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(ATTENTION, _varlen_attention)
    AttentionMaskInterface.register(ATTENTION, _no_mask)
    _registered = True


@contextmanager
def packed_attention(model):
    """Inside the block the model's attention is the packed one; the previous implementation is put back."""
    _register()
    config = model.config
    before = config._attn_implementation
    _set_attention(model, ATTENTION)
    try:
        yield
    finally:
        _set_attention(model, before)


def _set_attention(model, name):
    # Every sub-config (text config of a multimodal model, say) follows the top one.
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = name


@dataclass
class Packed:
    """One packed micro-batch: rows (adapter i, sequence j) end to end."""
    ids: torch.Tensor            # [1, T]
    positions: torch.Tensor      # [1, T], restarting at 0 in each row
    cu: torch.Tensor             # [rows + 1] row boundaries
    spans: list                  # (adapter, token slice): each adapter's rows are contiguous
    rows: list                   # (adapter, sequence) of each row, in order
    src: torch.Tensor            # [N] positions whose next token is a target
    labels: torch.Tensor         # [N] that next token
    owner: torch.Tensor          # [N] the row of each target

    @property
    def tokens(self) -> int:
        return int(self.ids.shape[1])


def pack_rows(rows, jobs, budget: int) -> list[list]:
    """Cut one step's rows (in adapter order) into micro-batches of at most `budget` real tokens each, keeping
    the order, so every adapter's rows stay contiguous. A row longer than the budget goes alone."""
    groups, cur, used = [], [], 0
    for i, j in rows:
        n = len(jobs[i].input_ids[j])
        if cur and used + n > budget:
            groups.append(cur)
            cur, used = [], 0
        cur.append((i, j))
        used += n
    if cur:
        groups.append(cur)
    return groups


def collate_packed(micro, jobs, dev) -> Packed:
    ids, pos, cu, src, labels, owner, spans = [], [], [0], [], [], [], []
    for r, (i, j) in enumerate(micro):
        seq, mask = jobs[i].input_ids[j], jobs[i].loss_masks[j]
        start = cu[-1]
        ids += seq
        pos += range(len(seq))
        cu.append(start + len(seq))
        for t in range(1, len(seq)):
            if mask[t]:
                src.append(start + t - 1)
                labels.append(seq[t])
                owner.append(r)
        if spans and spans[-1][0] == i and spans[-1][1].stop == start:
            spans[-1] = (i, slice(spans[-1][1].start, cu[-1]))
        else:
            spans.append((i, slice(start, cu[-1])))
    as_long = lambda v: torch.tensor(v, dtype=torch.long, device=dev)  # noqa: E731
    return Packed(as_long(ids)[None], as_long(pos)[None], as_long(cu), spans, list(micro), as_long(src),
                  as_long(labels), as_long(owner))


class _HeadCrossEntropy(torch.autograd.Function):
    """Per-position cross-entropy of a frozen head, with d(ce)/d(hidden) computed in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk):
        acc = torch.promote_types(hidden.dtype, torch.float32)   # at least fp32, as the padded path
        ce = hidden.new_empty(hidden.shape[0], dtype=acc)
        grad = torch.empty_like(hidden)
        for lo in range(0, hidden.shape[0], chunk):
            h = hidden[lo:lo + chunk]
            logits = F.linear(h, weight, bias).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            y = labels[lo:lo + chunk]
            ce[lo:lo + chunk] = lse - logits.gather(1, y[:, None]).squeeze(1)
            probs = logits.sub_(lse[:, None]).exp_()                        # softmax, in place
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            grad[lo:lo + chunk] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return ce

    @staticmethod
    def backward(ctx, grad_ce):
        (grad,) = ctx.saved_tensors
        g = grad_ce.to(grad.dtype)[:, None]
        # A zero weight (a diverged or finished adapter) must give a zero gradient even where grad is not finite.
        return torch.where(g != 0, g * grad, torch.zeros_like(grad)), None, None, None, None


def head_loss(head: torch.nn.Linear, hidden: torch.Tensor, labels: torch.Tensor,
              chunk: int = HEAD_CHUNK) -> torch.Tensor:
    """Cross-entropy of each row of `hidden` [N, d] against `labels` [N] through the frozen `head`, in at least fp32."""
    if head.weight.requires_grad:
        raise ValueError("head_loss needs a frozen output head")
    return _HeadCrossEntropy.apply(hidden, head.weight, head.bias, labels, chunk)


_checked: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def fused_head_ok(model) -> bool:
    """Whether the model's logits are exactly its output head applied to the backbone's last hidden states
    (no soft-capping or scaling after the head): checked once per model on a few tokens."""
    if model in _checked:
        return _checked[model]
    head = model.get_output_embeddings()
    ok = False
    if isinstance(head, torch.nn.Linear) and not head.weight.requires_grad:
        dev = head.weight.device
        ids = torch.arange(1, 9, device=dev)[None]
        was = model.training
        model.eval()
        try:
            full = model(input_ids=ids).logits.float()
            mine = head(model.base_model(input_ids=ids).last_hidden_state).float()
            ok = bool(torch.allclose(full, mine, rtol=1e-3, atol=1e-3))
        finally:
            model.train(was)
    _checked[model] = ok
    return ok

"""Training: the per-adapter optimizer, train jobs and their micro-batches, training a pack of adapters
together, full finetuning of every weight (undone on exit), and the generator's LoRA finetune.

`train_pack` trains adapter i of an `AdapterPack` on jobs[i], all in one pass over the frozen base;
`full_finetune` uses torch's AdamW and LambdaLR directly (a Trainer would add a dataset, collator and
checkpointing around three lines of work) over the same `TrainJob` plan and length-aware micro-batches, so
both kinds of update see the data in the same order.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .config import FinetuneConfig
from .faults import fault_point
from .lora import AdapterPack, save_peft_adapter
from .models import LoadedModel, save_model
from .packed import Packed, collate_packed, fused_head_ok, head_loss, pack_rows, packed_attention
from .protocol import Update

_FLOAT32_MAX = torch.finfo(torch.float32).max


class StackedAdamW:
    """AdamW over stacked adapter parameters with a per-adapter step count, learning rate, gradient clip and
    active mask. For one adapter it performs the same update as torch.optim.AdamW (same formula, fp32 state);
    an adapter not in the current step keeps its weights and moments untouched."""

    def __init__(self, params: list[nn.Parameter], n: int, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = params
        self.n = n
        self.b1, self.b2 = betas
        self.eps = eps
        self.wd = weight_decay
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(n, dtype=torch.float64)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def grad_norms(self) -> torch.Tensor:
        total = torch.zeros(self.n, dtype=self.params[0].dtype, device=self.params[0].device)
        for p in self.params:
            if p.grad is not None:
                total += p.grad.to(total.dtype).pow(2).flatten(1).sum(1)
        return total.sqrt()

    @torch.no_grad()
    def step(self, lrs: torch.Tensor, active: torch.Tensor, max_grad_norm: float | None = None):
        """lrs: [n] learning rate of each adapter for this step; active: [n] bool."""
        dev = self.params[0].device
        active = active.to(dev)
        self.steps += active.to(torch.float64).cpu()
        dt = self.params[0].dtype
        clip = torch.ones(self.n, device=dev, dtype=dt)
        if max_grad_norm:
            norms = self.grad_norms()
            # As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
            clip = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        steps = self.steps.clamp(min=1)
        bc1 = (1 - self.b1 ** steps).to(dev, dt)
        bc2_sqrt = (1 - self.b2 ** steps).sqrt().to(dev, dt)
        lrs = lrs.to(dev, dt)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            mask = active.view(shape)
            g = p.grad * clip.view(shape)
            if self.wd:
                p.mul_(torch.where(mask, 1 - lrs.view(shape) * self.wd, torch.ones_like(lrs.view(shape))))
            m.copy_(torch.where(mask, m * self.b1 + g * (1 - self.b1), m))
            v.copy_(torch.where(mask, v * self.b2 + g * g * (1 - self.b2), v))
            denom = v.sqrt() / bc2_sqrt.view(shape) + self.eps
            update = (lrs / bc1).view(shape) * m / denom
            p.sub_(torch.where(mask, update, torch.zeros_like(update)))


def lr_at(step: int, total: int, lr: float, schedule: str, warmup: int = 0) -> float:
    """Learning rate for 0-based `step` of `total` steps (the schedule transformers' Trainer uses)."""
    if warmup and step < warmup:
        return lr * step / warmup
    if schedule == "constant":
        return lr
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return lr * max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


@dataclass
class TrainJob:
    """What one adapter trains on: token-id sequences, with the positions that count in the loss."""
    input_ids: list[list[int]]
    loss_masks: list[list[int]]       # 1 where the token is a target (the first token is never a target)
    lr: float
    epochs: int
    batch_size: int
    seed: int

    def batches(self) -> list[list[int]]:
        """Indices of the sequences in each optimizer step: seeded shuffle per epoch, as a seeded DataLoader."""
        gen = torch.Generator().manual_seed(int(self.seed))
        out = []
        n = len(self.input_ids)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).tolist()
            out += [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        return out


@dataclass
class TrainOutcome:
    steps: int
    final_loss: float | None
    failed: str | None = None         # why the adapter was stopped (non-finite loss), or None
    losses: list[float] | None = None


def train_pack(pack: AdapterPack, jobs: list[TrainJob], schedule: str = "linear", warmup_steps: int = 0,
               weight_decay: float = 0.0, max_grad_norm: float = 1.0, micro_batch_tokens: int = 4096,
               pad_id: int = 0, progress=None, packed: bool = True) -> list[TrainOutcome]:
    """Train adapter i of the pack on jobs[i], all adapters in one pass over the frozen base.

    Global step t takes the t-th mini-batch of every adapter that still has steps left; adapters that finish
    early drop out. Packed (the default), the step's rows go end to end into sequences of at most
    `micro_batch_tokens` tokens, attention inside each row and the output head only where a target is
    (`engine.packed`); unpacked, they are sorted by length and padded into micro-batches of at most that many
    padded tokens. Padding never enters the loss. Each adapter's loss is the mean over its own target tokens
    in the step (as a Trainer with its batch), so its gradient is the one it would get if trained alone.
    """
    if len(jobs) != pack.n:
        raise ValueError(f"{len(jobs)} jobs for a pack of {pack.n} adapters")
    model = pack.model
    dev = next(iter(pack.layers.values())).lora_A.device
    params = pack.parameters()
    for p in params:
        p.requires_grad_(True)
    opt = StackedAdamW(params, pack.n, weight_decay=weight_decay)
    plans = [job.batches() for job in jobs]
    totals = [len(p) for p in plans]
    failed: list[str | None] = [None] * pack.n
    last_loss: list[float | None] = [None] * pack.n
    losses: list[list[float]] = [[] for _ in jobs]
    was_training = model.training
    model.train()
    fused = packed and fused_head_ok(model)     # checked before the packed attention is set (it runs the model)
    attention = packed_attention(model) if packed else nullcontext()
    try:
        attention.__enter__()
        for t in range(max(totals, default=0)):
            active = [i for i in range(pack.n) if t < totals[i] and failed[i] is None]
            if not active:
                break
            rows = [(i, j) for i in active for j in plans[i][t]]
            n_targets = {i: 0 for i in active}
            for i, j in rows:
                n_targets[i] += sum(jobs[i].loss_masks[j][1:])
            step_loss = {i: 0.0 for i in active}
            opt.zero_grad()
            micros = pack_rows(rows, jobs, micro_batch_tokens) if packed else _micro_batches(rows, jobs,
                                                                                              micro_batch_tokens)
            for micro in micros:
                if packed:
                    row_loss = _packed_row_losses(pack, collate_packed(micro, jobs, dev), fused)
                else:
                    row_loss = _padded_row_losses(pack, micro, jobs, pad_id, dev)
                weights = torch.tensor([1.0 / max(1, n_targets[i]) for i, _ in micro], device=dev,
                                       dtype=row_loss.dtype)
                per_row = row_loss * weights
                finite = torch.isfinite(per_row.detach())
                values = per_row.detach().tolist()
                for r, (i, _) in enumerate(micro):
                    if not bool(finite[r]) and failed[i] is None:
                        failed[i] = f"non-finite loss at step {t}"
                    step_loss[i] += values[r]
                keep = torch.tensor([failed[i] is None for i, _ in micro], device=dev)
                loss = torch.where(keep & finite, per_row, torch.zeros_like(per_row)).sum()
                if loss.requires_grad:
                    loss.backward()
            act = torch.zeros(pack.n, dtype=torch.bool)
            lrs = torch.zeros(pack.n)
            for i in active:
                if failed[i] is None:
                    act[i] = True
                    # An absurd learning rate (1e39) is beyond float32, which refuses it: it is held as inf, so
                    # that adapter's weights go non-finite in the step and it fails alone, not the whole pack.
                    lr = lr_at(t, totals[i], jobs[i].lr, schedule, warmup_steps)
                    lrs[i] = lr if abs(lr) <= _FLOAT32_MAX else math.copysign(math.inf, lr)
                    last_loss[i] = step_loss[i]
                    losses[i].append(step_loss[i])
            opt.step(lrs, act, max_grad_norm)
            ok = pack.finite_all()
            for i in active:
                if failed[i] is None and not ok[i]:
                    failed[i] = f"non-finite adapter weights after step {t}"
            if progress is not None:
                progress(t + 1, max(totals))
    finally:
        attention.__exit__(None, None, None)
        opt.zero_grad()
        for p in params:
            p.requires_grad_(False)
        model.train(was_training)
    return [TrainOutcome(steps=totals[i] if failed[i] is None else len(losses[i]), final_loss=last_loss[i],
                         failed=failed[i], losses=losses[i]) for i in range(pack.n)]


def _padded_row_losses(pack, micro, jobs, pad_id, dev) -> torch.Tensor:
    """Summed target-token loss of each row of a padded micro-batch (the full head at every position)."""
    ids, mask, labels_mask, index = _collate(micro, jobs, pad_id, dev)
    with pack.route(index):
        logits = pack.model(input_ids=ids, attention_mask=mask).logits
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    tok_loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (tok_loss * labels_mask[:, 1:].to(tok_loss.dtype)).sum(1)


def _packed_row_losses(pack, batch: Packed, fused: bool) -> torch.Tensor:
    """Summed target-token loss of each row of a packed micro-batch: one sequence through the backbone, then
    the head only at the target positions (fused and chunked where `fused_head_ok`, else transformers'
    `logits_to_keep`). The caller has set the packed attention."""
    model = pack.model
    lens = batch.cu[1:] - batch.cu[:-1]
    kw = dict(input_ids=batch.ids, position_ids=batch.positions, use_cache=False, cu_seq_lens_q=batch.cu,
              cu_seq_lens_k=batch.cu, max_length_q=int(lens.max()), max_length_k=int(lens.max()))
    with pack.route_spans(batch.spans, batch.tokens):     # the packed attention is set once, in train_pack
        if fused:
            hidden = model.base_model(**kw).last_hidden_state[0]
            ce = head_loss(model.get_output_embeddings(), hidden[batch.src], batch.labels)
        else:
            logits = model(**kw, logits_to_keep=batch.src).logits[0]
            ce = F.cross_entropy(logits.float(), batch.labels, reduction="none")
    return torch.zeros(len(batch.rows), dtype=ce.dtype, device=ce.device).index_add(0, batch.owner, ce)


# A forward/backward pass costs about this many padded tokens of work before its first token (Python and
# kernel overheads of ~200 small layers); measured order of magnitude on 2 CPU cores.
MICRO_BATCH_OVERHEAD_TOKENS = 96


def _micro_batches(rows, jobs, budget, overhead=MICRO_BATCH_OVERHEAD_TOKENS):
    """Cut one step's rows into micro-batches: sort by length, then choose the contiguous split that minimises
    padded tokens plus a fixed cost per pass (dynamic programming, n <= a few dozen rows). One long row (the
    passage) no longer pads every short row (a self-edit line) to its length."""
    rows = sorted(rows, key=lambda r: len(jobs[r[0]].input_ids[r[1]]), reverse=True)
    lens = [len(jobs[i].input_ids[j]) for i, j in rows]
    n = len(rows)
    best = [0.0] + [float("inf")] * n      # best[e]: cost of rows[:e]
    cut = [0] * (n + 1)
    for e in range(1, n + 1):
        for b in range(e - 1, -1, -1):      # group rows[b:e]; its longest row is rows[b]
            if lens[b] * (e - b) > budget and e - b > 1:
                break
            cost = best[b] + lens[b] * (e - b) + overhead
            if cost < best[e]:
                best[e], cut[e] = cost, b
    groups, e = [], n
    while e > 0:
        groups.append(rows[cut[e]:e])
        e = cut[e]
    return groups[::-1]


def _collate(micro, jobs, pad_id, dev):
    width = max(len(jobs[i].input_ids[j]) for i, j in micro)
    ids = torch.full((len(micro), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(micro), width), dtype=torch.long)
    target = torch.zeros((len(micro), width), dtype=torch.float32)
    for r, (i, j) in enumerate(micro):
        seq = jobs[i].input_ids[j]
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, :len(seq)] = 1
        target[r, :len(seq)] = torch.tensor(jobs[i].loss_masks[j], dtype=torch.float32)
    index = [i for i, _ in micro]
    return ids.to(dev), mask.to(dev), target.to(dev), index

@contextmanager
def full_finetune(model: torch.nn.Module, job: TrainJob, schedule: str = "linear", weight_decay: float = 0.0,
                  max_grad_norm: float = 1.0, micro_batch_tokens: int = 4096, pad_id: int = 0, progress=None):
    """Train all of `model`'s weights on `job`; inside the block the model is the finetuned one, and leaving
    the block restores the original weights exactly. Yields a TrainOutcome."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    dev = params[0].device
    plan = job.batches()
    opt = torch.optim.AdamW(params, lr=job.lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, len(plan), 1.0, schedule))
    losses: list[float] = []
    failed = None
    try:
        for p in params:
            p.requires_grad_(True)
        model.train()
        for t, batch in enumerate(plan):
            rows = [(0, j) for j in batch]
            n_targets = max(1, sum(sum(job.loss_masks[j][1:]) for j in batch))
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in _micro_batches(rows, [job], micro_batch_tokens):
                ids, mask, target, _ = _collate(micro, [job], pad_id, dev)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                tok = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none") * target[:, 1:]
                loss = tok.sum() / n_targets
                loss.backward()
                step_loss += float(loss.detach())
            if not torch.isfinite(torch.tensor(step_loss)):
                failed = f"non-finite loss at step {t}"
                break
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            losses.append(step_loss)
            if progress is not None:
                progress(t + 1, len(plan))
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.requires_grad_(False)
        model.eval()
        yield TrainOutcome(steps=len(losses), final_loss=losses[-1] if losses else None, failed=failed,
                           losses=losses)
    finally:
        for p in params:
            p.requires_grad_(False)
        del opt
        model.load_state_dict(saved)
        model.eval()


def tokenize_update(tokenizer, update: Update, max_len: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and loss masks: whole texts count in full; (prompt, completion) pairs count the completion."""
    ids, masks = [], []
    for text in update.texts:
        seq = tokenizer(text)["input_ids"][:max_len]
        ids.append(seq)
        masks.append([1] * len(seq))
    for prompt, completion in update.pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]  # rendered prompts carry their own markers
        seq = (p + tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])[:max_len]
        ids.append(seq)
        masks.append([0] * min(len(p), len(seq)) + [1] * max(0, len(seq) - len(p)))
    return ids, masks


@dataclass
class SFTResult:
    steps: int
    final_loss: float | None
    losses: list[float] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0


def finetune_and_merge(lm: LoadedModel, pairs: list[tuple[str, str]], cfg: FinetuneConfig, seed: int,
                       out_dir: str | Path | None = None, progress=None) -> SFTResult:
    """LoRA-finetune `lm` on (prompt, completion) pairs, loss on the completion (and its EOS) only, then merge
    the adapter into the weights in place. With `out_dir`, save the adapter in PEFT's format under
    `out_dir/adapter` and the merged model (safetensors + tokenizer) under `out_dir/merged`."""
    t0 = time.perf_counter()
    if not pairs:  # nothing to learn from: the next model is this one, saved as its checkpoint all the same
        if out_dir is not None:
            save_model(lm, Path(out_dir) / "merged")
        return SFTResult(steps=0, final_loss=None)
    tok = lm.tokenizer
    ids, masks = tokenize_update(tok, Update(pairs=list(pairs)), cfg.max_seq_len)
    job = TrainJob(ids, masks, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with AdapterPack(lm.model, 1, cfg.rank, cfg.alpha, 0.0, cfg.target_modules, seeds=[seed]) as pack:
        (outcome,) = train_pack(pack, [job], schedule=cfg.schedule, max_grad_norm=cfg.max_grad_norm,
                                micro_batch_tokens=cfg.micro_batch_tokens, pad_id=pad, progress=progress,
                                packed=cfg.packed)
        if outcome.failed:
            raise RuntimeError(f"generator finetune failed: {outcome.failed}")
        if out_dir is not None:
            save_peft_adapter(pack, 0, Path(out_dir) / "adapter", base_name=lm.name)
        pack.merge(0)
    fault_point("merge")
    if out_dir is not None:
        save_model(lm, Path(out_dir) / "merged")
    return SFTResult(steps=outcome.steps, final_loss=outcome.final_loss, losses=outcome.losses or [],
                     examples=len(pairs), seconds=time.perf_counter() - t0)

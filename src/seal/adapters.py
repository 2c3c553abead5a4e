"""Many LoRA adapters over one frozen base model, trained and evaluated together.

Why not PEFT: PEFT holds one active adapter per forward pass (or, with `adapter_names`, one per row at
inference only). SEAL's inner loop trains k adapters on k different self-edits; doing that in one pass needs
stacked adapter weights, each batch row routed to its adapter, and an optimizer whose state, learning rate,
schedule, clipping and step count are per adapter. That is this module. With k = 1 it is the plain
one-at-a-time loop, and tests check that k adapters trained together equal k adapters trained alone.

The base model is never written to: adapters live beside each wrapped Linear, and `AdapterPack.close()`
puts the original modules back, so the base is restored bit for bit.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class _Router:
    """Which adapter each batch row uses (-1 = the base model alone). Shared by every wrapped layer.

    `groups` holds the same routing as (adapter, rows) pairs, rows a slice when they are contiguous; the
    no-grad forward uses it (see `MultiLoraLinear.forward`)."""

    def __init__(self):
        self.index: torch.Tensor | None = None
        self.groups: list[tuple[int, slice | torch.Tensor]] = []

    def set(self, index: torch.Tensor | None) -> None:
        self.index = index
        self.groups = [] if index is None else _groups(index)


def _groups(index: torch.Tensor) -> list[tuple[int, slice | torch.Tensor]]:
    out = []
    for a in sorted(set(index.tolist()) - {-1}):
        rows = (index == a).nonzero().flatten()
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        out.append((a, slice(lo, hi) if hi - lo == len(rows) else rows))
    return out


class MultiLoraLinear(nn.Module):
    """A frozen Linear plus k stacked LoRA adapters: y = W x + scale * B[a] A[a] x for the row's adapter a."""

    grouped = True   # the no-grad forward groups rows by adapter (False: always the per-row path; for benchmarks)

    def __init__(self, base: nn.Linear, n_adapters: int, rank: int, alpha: float, dropout: float,
                 router: _Router, param_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.base = base
        self.router = router
        self.scale = alpha / rank
        self.dropout = dropout
        dev = base.weight.device
        # Adapter weights in fp32 (as PEFT keeps them); the forward casts them to the activations' dtype.
        self.lora_A = nn.Parameter(torch.zeros(n_adapters, rank, base.in_features, device=dev, dtype=param_dtype))
        self.lora_B = nn.Parameter(torch.zeros(n_adapters, base.out_features, rank, device=dev, dtype=param_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        index = self.router.index
        if index is None:
            return y
        if index.shape[0] != x.shape[0]:
            raise RuntimeError(f"adapter routing has {index.shape[0]} rows but the batch has {x.shape[0]}")
        if self.grouped and not torch.is_grad_enabled():
            return y + self._grouped_delta(x)
        active = index >= 0
        safe = index.clamp(min=0)
        a = self.lora_A[safe].to(x.dtype)                       # [b, r, in]
        b = self.lora_B[safe].to(x.dtype)                       # [b, out, r]
        h = x if x.dim() == 3 else x.unsqueeze(1)
        if self.dropout and self.training:
            h = F.dropout(h, self.dropout)
        delta = torch.bmm(torch.bmm(h, a.transpose(1, 2)), b.transpose(1, 2))
        delta = delta * (self.scale * active.to(x.dtype)).view(-1, 1, 1)
        return y + delta.view_as(y)

    def _grouped_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA term with rows grouped by adapter: two plain matmuls per adapter in the batch.

        Why not the per-row path: it copies each row's A and B (`lora_A[index]`) at every layer and every
        forward, which in generation means every decoded token; with 32 rows that copy outweighs the base
        model's own weights. Grouped, each adapter's weights are read once per forward. Gradients need the
        per-row path (one autograd graph over a gather), so this runs only without them."""
        h = x if x.dim() == 3 else x.unsqueeze(1)
        delta = h.new_zeros(h.shape[:-1] + (self.base.out_features,))
        for a, rows in self.router.groups:
            w_a = self.lora_A[a].to(x.dtype)
            w_b = self.lora_B[a].to(x.dtype)
            part = (h[rows] @ w_a.T) @ w_b.T
            if isinstance(rows, slice):
                delta[rows] = part
            else:
                delta.index_copy_(0, rows, part)
        return (delta * self.scale).view(x.shape[:-1] + (self.base.out_features,))


def find_targets(model: nn.Module, target_modules) -> list[str]:
    """Names of the Linear layers to adapt. `all-linear` means every Linear except the output head."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if target_modules in ("all-linear", ("all-linear",)):
            if leaf != "lm_head":
                names.append(name)
        elif leaf in target_modules:
            names.append(name)
    if not names:
        raise ValueError(f"no Linear layer of the model matches target modules {target_modules}")
    return names


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


class AdapterPack:
    """k LoRA adapters installed on a model. Use as a context manager; leaving it restores the base."""

    def __init__(self, model: nn.Module, n_adapters: int, rank: int, alpha: float, dropout: float = 0.0,
                 target_modules=("q_proj", "v_proj"), seeds: list[int] | None = None,
                 param_dtype: torch.dtype = torch.float32):
        self.model = model
        self.n = n_adapters
        self.rank = rank
        self.alpha = alpha
        self.router = _Router()
        self.names = find_targets(model, target_modules)
        self.layers: dict[str, MultiLoraLinear] = {}
        for name in self.names:
            base = model.get_submodule(name)
            layer = MultiLoraLinear(base, n_adapters, rank, alpha, dropout, self.router, param_dtype)
            _set_module(model, name, layer)
            self.layers[name] = layer
        seeds = seeds if seeds is not None else list(range(n_adapters))
        if len(seeds) != n_adapters:
            raise ValueError(f"{len(seeds)} seeds for {n_adapters} adapters")
        for i, seed in enumerate(seeds):
            self.reset(i, seed)

    @torch.no_grad()
    def reset(self, i: int, seed: int) -> None:
        """Fresh adapter i: A Kaiming-uniform (as PEFT), B zero, so the adapter starts as the identity.
        Each adapter draws from its own generator so its init does not depend on the others."""
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        for name in self.names:
            layer = self.layers[name]
            fan_in = layer.lora_A.shape[2]
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_ with a=sqrt(5)
            a = torch.empty(layer.lora_A.shape[1:]).uniform_(-bound, bound, generator=gen)
            layer.lora_A[i].copy_(a.to(layer.lora_A.dtype))
            layer.lora_B[i].zero_()

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    @contextmanager
    def route(self, index):
        """Route batch row j through adapter index[j] (-1: base only) inside the block."""
        dev = next(iter(self.layers.values())).lora_A.device
        self.router.set(torch.as_tensor(index, dtype=torch.long, device=dev))
        try:
            yield
        finally:
            self.router.set(None)

    def close(self) -> None:
        for name, layer in self.layers.items():
            _set_module(self.model, name, layer.base)
        self.layers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @torch.no_grad()
    def adapter_state(self, i: int) -> dict[str, torch.Tensor]:
        """Adapter i as a PEFT-format state dict (keys `base_model.model.<layer>.lora_A.weight`)."""
        out = {}
        for name, layer in self.layers.items():
            out[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A[i].detach().clone()
            out[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B[i].detach().clone()
        return out

    @torch.no_grad()
    def merge(self, i: int) -> None:
        """Add adapter i into the base weights for good (W += scale * B A), as PEFT's merge_and_unload.
        The base Linear modules are the model's own, so the merge outlives `close()`."""
        for layer in self.layers.values():
            _add_lora(layer.base.weight, layer.lora_A[i], layer.lora_B[i], layer.scale)

    @torch.no_grad()
    def finite(self, i: int) -> bool:
        return all(torch.isfinite(layer.lora_A[i]).all() and torch.isfinite(layer.lora_B[i]).all()
                   for layer in self.layers.values())


@torch.no_grad()
def _add_lora(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
    """weight += scale * B A, summed in fp64 so the merge adds no rounding of its own."""
    weight.copy_((weight.to(torch.float64) + scale * (b.to(torch.float64) @ a.to(torch.float64))).to(weight.dtype))


def merge_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], scale: float) -> None:
    """Merge an adapter kept by `AdapterPack.adapter_state` (PEFT-format keys) into a model's weights."""
    prefix, suffix = "base_model.model.", ".lora_A.weight"
    for key, a in state.items():
        if key.endswith(suffix):
            name = key[len(prefix):-len(suffix)]
            _add_lora(model.get_submodule(name).weight, a, state[key[:-len(suffix)] + ".lora_B.weight"], scale)


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
               pad_id: int = 0, progress=None) -> list[TrainOutcome]:
    """Train adapter i of the pack on jobs[i], all adapters in one pass over the frozen base.

    Global step t takes the t-th mini-batch of every adapter that still has steps left; adapters that finish
    early drop out. The rows of a step are sorted by length and cut into micro-batches of at most
    `micro_batch_tokens` padded tokens; padding never enters the loss. Each adapter's loss is the mean over
    its own target tokens in the step (as a Trainer with its batch), so its gradient is the one it would get
    if trained alone.
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
    try:
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
            for micro in _micro_batches(rows, jobs, micro_batch_tokens):
                ids, mask, labels_mask, index = _collate(micro, jobs, pad_id, dev)
                with pack.route(index):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
                tok_loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                tok_loss = tok_loss * labels_mask[:, 1:].to(tok_loss.dtype)
                row_loss = tok_loss.sum(1)
                weights = torch.tensor([1.0 / max(1, n_targets[i]) for i, _ in micro], device=dev,
                                       dtype=tok_loss.dtype)
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
                    lrs[i] = lr_at(t, totals[i], jobs[i].lr, schedule, warmup_steps)
                    last_loss[i] = step_loss[i]
                    losses[i].append(step_loss[i])
            opt.step(lrs, act, max_grad_norm)
            for i in active:
                if failed[i] is None and not pack.finite(i):
                    failed[i] = f"non-finite adapter weights after step {t}"
            if progress is not None:
                progress(t + 1, max(totals))
    finally:
        opt.zero_grad()
        for p in params:
            p.requires_grad_(False)
        model.train(was_training)
    return [TrainOutcome(steps=totals[i] if failed[i] is None else len(losses[i]), final_loss=last_loss[i],
                         failed=failed[i], losses=losses[i]) for i in range(pack.n)]


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

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
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class _Router:
    """Which adapter each batch row uses (-1 = the base model alone). Shared by every wrapped layer.

    `groups` holds the same routing as (adapter, rows) pairs, rows a slice when they are contiguous; the
    no-grad forward uses it (see `MultiLoraLinear.forward`).

    Packed training routes tokens instead of rows: `spans` holds (adapter, token slice) pairs over the one
    packed sequence, each adapter's tokens contiguous, and `tokens` its length."""

    def __init__(self):
        self.index: torch.Tensor | None = None
        self.groups: list[tuple[int, slice | torch.Tensor]] = []
        self.spans: list[tuple[int, slice]] | None = None
        self.tokens = 0

    def set(self, index: torch.Tensor | None) -> None:
        self.index = index
        self.groups = [] if index is None else _groups(index)

    def set_spans(self, spans: list[tuple[int, slice]] | None, tokens: int = 0) -> None:
        self.spans, self.tokens = spans, tokens


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
        if self.router.spans is not None:
            return y + self._span_delta(x)
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

    @torch.compiler.disable   # eager under `inner.compile` (routing is Python data; see InnerLoop)
    def _span_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA term of a packed sequence ([1, T, in]): each adapter's contiguous run of tokens through
        its own A and B, two plain matmuls per adapter, joined with `cat` so autograd sees one graph. Tokens
        outside every span (none in training) get no LoRA term."""
        h = x.reshape(-1, x.shape[-1])
        if h.shape[0] != self.router.tokens:
            raise RuntimeError(f"adapter routing covers {self.router.tokens} tokens but the batch has {h.shape[0]}")
        if self.dropout and self.training:
            h = F.dropout(h, self.dropout)
        parts, at = [], 0
        for a, sl in self.router.spans:
            if sl.start > at:
                parts.append(h.new_zeros(sl.start - at, self.base.out_features))
            parts.append((h[sl] @ self.lora_A[a].to(x.dtype).T) @ self.lora_B[a].to(x.dtype).T)
            at = sl.stop
        if at < h.shape[0]:
            parts.append(h.new_zeros(h.shape[0] - at, self.base.out_features))
        return (torch.cat(parts) * self.scale).view(x.shape[:-1] + (self.base.out_features,))

    @torch.compiler.disable   # eager under `inner.compile` (routing is Python data; see InnerLoop)
    def _grouped_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA term with rows grouped by adapter: two plain matmuls per adapter in the batch.

        Why not the per-row path: it copies each row's A and B (`lora_A[index]`) at every layer and every
        forward, which in generation means every decoded token; with 32 rows that copy outweighs the base
        model's own weights. Grouped, each adapter's weights are read once per forward. Gradients need the
        per-row path (one autograd graph over a gather), so this runs only without them."""
        h = x if x.dim() == 3 else x.unsqueeze(1)
        if h.shape[1] == 1 and len(self.router.groups) > 1:
            return self._stacked_delta(h).view(x.shape[:-1] + (self.base.out_features,))
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


    @torch.compiler.disable   # eager under `inner.compile` (routing is Python data; see InnerLoop)
    def _stacked_delta(self, h: torch.Tensor) -> torch.Tensor:
        """One decode step ([b, 1, in]) with several adapters in the batch: every row through every adapter's A
        at once (one [b, in] x [in, k*r] matmul), the other adapters' blocks zeroed, then one matmul with all
        the B's stacked. k times the (tiny) LoRA FLOPs of the grouped path, but two matmul calls per layer
        instead of two per adapter, which is what a decode step of a few dozen rows pays for."""
        k, r, _ = self.lora_A.shape
        a_all = self.lora_A.reshape(k * r, -1).to(h.dtype)                         # [k*r, in], a view
        key = (self.lora_B._version, h.dtype)
        if getattr(self, "_b_stack_key", None) != key:                            # B's stacked [k*r, out]
            self._b_stack = self.lora_B.detach().transpose(1, 2).reshape(k * r, -1).to(h.dtype)
            self._b_stack_key = key
        index = self.router.index
        own = (torch.arange(k, device=index.device)[None] == index[:, None])     # [b, k]; base rows: none
        mask = own.to(h.dtype).repeat_interleave(r, dim=1)                        # [b, k*r]
        z = (h[:, 0] @ a_all.T) * mask
        return (z @ self._b_stack * self.scale)[:, None]


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

    @contextmanager
    def route_spans(self, spans: list[tuple[int, slice]], tokens: int):
        """Route a packed sequence of `tokens` tokens: adapter a on each (a, token slice) span."""
        self.router.set_spans(spans, tokens)
        try:
            yield
        finally:
            self.router.set_spans(None)

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
    def finite_all(self) -> list[bool]:
        """Whether each adapter's weights are all finite, with one device sync for the whole pack (a check per
        adapter and layer would sync the GPU once per layer)."""
        ok = None
        for layer in self.layers.values():
            both = (torch.isfinite(layer.lora_A).flatten(1).all(1) & torch.isfinite(layer.lora_B).flatten(1).all(1))
            ok = both if ok is None else ok & both
        return ok.tolist() if ok is not None else [True] * self.n

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


def save_peft_adapter(pack: AdapterPack, i: int, out_dir, base_name: str):
    """Adapter i in the layout PEFT's `PeftModel.from_pretrained` reads (adapter_config.json and
    adapter_model.safetensors), so any PEFT user can load it onto the base model. Written under a temporary
    name and renamed: a folder of that name is always complete."""
    import json
    import shutil

    from safetensors.torch import save_file

    from .faults import fault_point

    final = Path(out_dir)
    out_dir = final.with_name(final.name + ".tmp")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    leaves = sorted({name.rsplit(".", 1)[-1] for name in pack.names})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": pack.rank, "lora_alpha": pack.alpha,
              "lora_dropout": 0.0, "bias": "none", "target_modules": leaves, "base_model_name_or_path": base_name,
              "fan_in_fan_out": False, "inference_mode": True}
    state = {k: v.contiguous() for k, v in pack.adapter_state(i).items()}
    save_file(state, str(out_dir / "adapter_model.safetensors"))
    fault_point("adapter.write")
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    if final.exists():
        shutil.rmtree(final)
    out_dir.rename(final)
    return final

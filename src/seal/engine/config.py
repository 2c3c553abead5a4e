"""The engine's typed settings: the inner-loop update and the generator's finetune. Presets are data: the paper's
settings and the calibrated small-model settings.

A field whose metadata says `affects_results: False` (pack sizes, micro-batch budgets) changes speed only, never
a number: the experiment layer leaves such fields out of the settings a resumed run must match.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SPEED_ONLY = {"affects_results": False}


def speed_only(default):
    """A field that changes how fast a run goes, not what it computes."""
    return field(default=default, metadata=SPEED_ONLY)


@dataclass
class InnerConfig:
    """The inner-loop update: one LoRA adapter per self-edit, trained on its sequences.

    The defaults are the `small` preset, calibrated for the built-in SmolLM2-135M (docs/RESULTS.md): the
    paper's rank, alpha, lr, epochs and batch size, but on every linear layer, because the paper's q/v-only
    adapter puts almost nothing into a 135M model.
    """
    rank: int = 32
    alpha: float = 64.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 1
    schedule: str = "linear"          # linear decay to 0 (paper), cosine, or constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 512
    # Batched training: how many adapters share one pass, and the padded-token budget of one micro-batch.
    adapters_per_pack: int = speed_only(8)
    micro_batch_tokens: int = speed_only(4096)
    # Earlier paths stay switchable so benchmarks compare in one run: packed=False pads micro-batches and runs
    # the head at every position; decoder="hf" answers with transformers' generate instead of seal's loop.
    packed: bool = speed_only(True)
    decoder: str = speed_only("seal")
    # torch.compile each decoder layer (dynamic shapes; the LoRA terms stay eager). Off by default: on 2 CPU
    # cores compiling costs ~85 s once for ~10% per step afterwards (docs/BENCHMARKS.md).
    compile: bool = speed_only(False)

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        problems = []
        if self.rank < 1: problems.append(f"rank must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1: problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr < 1: problems.append(f"lr must be in (0, 1), got {self.lr}")
        if self.epochs < 1: problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1: problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.schedule not in ("linear", "cosine", "constant"):
            problems.append(f"schedule must be linear, cosine or constant, got {self.schedule!r}")
        if self.adapters_per_pack < 1: problems.append("adapters_per_pack must be >= 1")
        if self.decoder not in ("seal", "hf"): problems.append(f"decoder must be seal or hf, got {self.decoder!r}")
        if problems:
            raise ValueError("invalid inner-loop settings: " + "; ".join(problems))


@dataclass
class FinetuneConfig:
    """The generator's finetune. Defaults: the paper's (TRL SFTTrainer, LoRA r64/alpha128 on all seven
    projections, lr 3e-4, 2 epochs, effective batch 10, linear decay, loss on the completion only)."""
    rank: int = 64
    alpha: float = 128.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lr: float = 3e-4
    epochs: int = 2
    batch_size: int = 10
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    max_seq_len: int = 2048
    micro_batch_tokens: int = speed_only(4096)
    packed: bool = speed_only(True)

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1 or self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < 1:
            raise ValueError(f"invalid generator finetune settings: {dataclasses.asdict(self)}")


SFTConfig = FinetuneConfig  # the name TRL users know


PRESETS: dict[str, dict] = {
    # Paper (Zweiger et al. 2025, knowledge incorporation): LoRA r32/alpha64 on q_proj and v_proj,
    # lr 1e-3 decayed linearly, 10 epochs, batch 1.
    "paper": dict(rank=32, alpha=64.0, dropout=0.0, target_modules=("q_proj", "v_proj"), lr=1e-3,
                  epochs=10, batch_size=1, schedule="linear"),
    # Calibrated for SmolLM2-135M on CPU: the paper's settings on all seven linear projections.
    "small": {},
    # Paper, ARC test-time training: LoRA r128/alpha16 on q, v, gate, up, down; cosine schedule with 11 warmup
    # steps, batch 2. Learning rate and epochs are the self-edit's choice.
    "arc-paper": dict(rank=128, alpha=16.0, dropout=0.0,
                      target_modules=("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"), lr=1e-4, epochs=2,
                      batch_size=2, schedule="cosine", warmup_steps=11, max_seq_len=2048),
    # ARC on the built-in model (not yet calibrated): the paper's targets at the `small` preset's rank and
    # alpha, and a warmup short enough for the few dozen steps a CPU run affords.
    "arc-small": dict(rank=32, alpha=64.0, dropout=0.0,
                      target_modules=("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"), lr=1e-4, epochs=2,
                      batch_size=2, schedule="cosine", warmup_steps=2, max_seq_len=1024),
}


def inner_preset(name: str, **overrides) -> InnerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return InnerConfig(**values)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)

"""The outer loop's domain-free parts (ReST-EM): choose which self-edits to reinforce, finetune the generator
on them with the loss on the completion only, merge, and save the result in standard formats.

The finetune runs on the same multi-adapter engine as the inner loop (one adapter, `adapters.train_pack`),
so the code path that teaches the generator is the one the tests check against PyTorch's AdamW.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .adapters import AdapterPack, TrainJob, train_pack
from .domains.base import Update
from .inner import tokenize_update
from .models import LoadedModel

SELECTION_RULES = ("best", "best-beats-base", "all-beat-base")


@dataclass
class SFTConfig:
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
    micro_batch_tokens: int = 4096

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1 or self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < 1:
            raise ValueError(f"invalid generator finetune settings: {asdict(self)}")


@dataclass
class Candidate:
    context_id: str
    sample: int
    reward: float                 # mean reward over the inner-loop seeds
    text: str


def select_self_edits(candidates: list[Candidate], base: dict[str, float], rule: str = "best") -> list[Candidate]:
    """Which self-edits the generator is finetuned on, per context.

    best (paper): the highest mean reward, even below the base model's accuracy; ties go to the earlier sample.
    best-beats-base: the same, kept only when it beats the base. all-beat-base: every one that beats the base.
    Blank self-edits are never selected."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {', '.join(SELECTION_RULES)}")
    by_ctx: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.text.strip():
            by_ctx.setdefault(c.context_id, []).append(c)
    chosen = []
    for ctx, cands in by_ctx.items():
        cands = sorted(cands, key=lambda c: c.sample)
        b = base.get(ctx, 0.0)
        if rule == "all-beat-base":
            chosen += [c for c in cands if c.reward > b]
            continue
        best = max(cands, key=lambda c: c.reward)  # max keeps the first of equal rewards
        if rule == "best" or best.reward > b:
            chosen.append(best)
    return chosen


@dataclass
class SFTResult:
    steps: int
    final_loss: float | None
    losses: list[float] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0


def finetune_and_merge(lm: LoadedModel, pairs: list[tuple[str, str]], cfg: SFTConfig, seed: int,
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
                                micro_batch_tokens=cfg.micro_batch_tokens, pad_id=pad, progress=progress)
        if outcome.failed:
            raise RuntimeError(f"generator finetune failed: {outcome.failed}")
        if out_dir is not None:
            save_peft_adapter(pack, 0, Path(out_dir) / "adapter", base_name=lm.name)
        pack.merge(0)
    if out_dir is not None:
        save_model(lm, Path(out_dir) / "merged")
    return SFTResult(steps=outcome.steps, final_loss=outcome.final_loss, losses=outcome.losses or [],
                     examples=len(pairs), seconds=time.perf_counter() - t0)


def save_peft_adapter(pack: AdapterPack, i: int, out_dir: Path, base_name: str) -> Path:
    """Adapter i in the layout PEFT's `PeftModel.from_pretrained` reads (adapter_config.json and
    adapter_model.safetensors), so any PEFT user can load it onto the base model."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    leaves = sorted({name.rsplit(".", 1)[-1] for name in pack.names})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": pack.rank, "lora_alpha": pack.alpha,
              "lora_dropout": 0.0, "bias": "none", "target_modules": leaves, "base_model_name_or_path": base_name,
              "fan_in_fan_out": False, "inference_mode": True}
    state = {k: v.contiguous() for k, v in pack.adapter_state(i).items()}
    save_file(state, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def save_model(lm: LoadedModel, out_dir: Path) -> Path:
    """The whole model as a Hugging Face folder (written under a temporary name, then renamed, so a folder
    that exists is always complete)."""
    import shutil
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lm.model.save_pretrained(tmp, safe_serialization=True)
    lm.tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir

"""`python benchmarks/gpu_inner_loop.py`: SEAL's inner loop three ways on one GPU, with randomly initialised
models of real architectures (no weights, no tokenizer, no network needed).

On the GPU machine (its files under $OUT come back):

    python benchmarks/gpu_inner_loop.py --json $OUT/gpu-inner-loop.json

Trial on a CPU: `python benchmarks/gpu_inner_loop.py --arch tiny --device cpu --ks 1,2,4 --epochs 1 --json X.json`.

What it measures, per architecture (`llama-1b` = Llama-3.2-1B, `qwen-7b` = Qwen2.5-7B, `tiny` for CPU trials),
on a synthetic workload shaped like SEAL's knowledge incorporation: per self-edit, one passage of 180 tokens and
3 implication lines of 15-60 tokens (random token ids, loss on every token), LoRA r32/alpha64 on q_proj and
v_proj, lr 1e-3 decayed linearly, batch size 1 (the paper's inner loop); then 6 questions of ~65 tokens whose
first 40 tokens are shared by every prompt (as a chat template's system turn is), answered greedily, 32 new
tokens. The only stop token is the last id of the vocabulary, which the data never contains and a random model
rarely emits, so decoding runs to the token budget (each record says how many tokens were decoded).

  original  the original SEAL code's way, as benchmarks/inner_loop.py re-creates it: per self-edit a fresh PEFT
            adapter (get_peft_model), the transformers Trainer, every row padded to --orig-pad tokens with the
            padding in the loss (labels = input_ids, pad included), the base model's answers regenerated, the
            adapter saved to disk and loaded back (PeftModel.from_pretrained) for answering, then unloaded.
  lean      seal's engine one adapter at a time: packed rows, head only at targets, seal's decode loop, adapters
            in memory, the base model's answers computed once.
  batched   seal's engine with k adapters trained in one pack (`train_pack`) and all their questions answered in
            one `greedy_decode` batch, each row routed to its adapter; the base answers once.

Each stage prints one line and appends a record to the JSON file, which is rewritten after every record (a
killed run keeps what finished); `summary` holds seconds per self-edit and the throughput ratios. Stages run
most important first (llama-1b: smoke, original, lean, batched k=1..64; qwen-7b: smoke, batched k=1..32, lean,
original); a stage whose cautious time estimate would overrun --budget-s is skipped and recorded as skipped.
Training uses --epochs (default 2, not the paper's 10, to fit the budget); each record also gives a linear
extrapolation to 10 epochs (training seconds x 10 / epochs, plus the rest unchanged).
"""
# ruff: noqa: E402  (the clock starts before the heavy imports, and seal is importable only after sys.path)
from __future__ import annotations

import time

T_START = time.perf_counter()   # the budget counts from here, imports included

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from seal.engine.generation import greedy_decode
from seal.engine.lora import AdapterPack
from seal.engine.packed import fused_head_ok
from seal.engine.training import TrainJob, train_pack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inner_loop import _ListDataset  # noqa: E402  (the CPU benchmark's row dataset; its top level imports only torch)

# The paper's inner loop (knowledge incorporation).
RANK, ALPHA, TARGETS = 32, 64.0, ("q_proj", "v_proj")
LR, BATCH_SIZE, PAPER_EPOCHS = 1e-3, 1, 10
TRAIN_KW = dict(schedule="linear", max_grad_norm=1.0, micro_batch_tokens=4096, pad_id=0, packed=True)

# The synthetic workload.
PAD_ID = 0
PASSAGE_TOKENS = 180
LINE_TOKENS = (15, 60)          # an implication line's length, drawn uniformly
QUESTIONS = 6
SHARED_PREFIX = 40              # prompt tokens common to every question
QUESTION_TOKENS = (20, 30)      # each question's own tokens after the shared prefix (prompts of 60-70 tokens)
NEW_TOKENS = 32

CAUTION = 1.3                   # estimates of a stage's time are its reference time scaled, times this


def _llama_1b():
    from transformers import LlamaConfig
    # Llama-3.2-1B. Its llama3 rope scaling and 131072 positions change no compute at these lengths.
    return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
                       max_position_embeddings=4096, tie_word_embeddings=True, rms_norm_eps=1e-5)


def _qwen_7b():
    from transformers import Qwen2Config
    # Qwen2.5-7B (head_dim 3584 / 28 = 128; q, k, v projections with bias, as Qwen2 always has).
    return Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, max_position_embeddings=4096,
                       tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False)


def _tiny():
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                       tie_word_embeddings=True)


@dataclass(frozen=True)
class Arch:
    config: Callable[[], object]    # returns the transformers config
    order: tuple[str, ...]      # the timed stages, most important first
    ks: tuple[int, ...]         # batched pack sizes when --ks is not given


ARCHS = {
    "llama-1b": Arch(_llama_1b, ("original", "lean", "batched"), (1, 2, 4, 8, 16, 32, 64)),
    "qwen-7b": Arch(_qwen_7b, ("batched", "lean", "original"), (1, 2, 4, 8, 16, 32)),
    "tiny": Arch(_tiny, ("original", "lean", "batched"), (1, 2, 4, 8)),
}


def approx_params(cfg) -> int:
    """Parameters of a Llama/Qwen2-style decoder from its config alone (to estimate before building it)."""
    h, hd = cfg.hidden_size, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = 2 * h * cfg.num_attention_heads * hd + 2 * h * cfg.num_key_value_heads * hd
    per_layer = attn + 3 * h * cfg.intermediate_size
    return cfg.num_hidden_layers * per_layer + cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)


def build_model(cfg, dev: torch.device, dtype: torch.dtype):
    """A randomly initialised model, created directly on `dev` in `dtype`, frozen, in eval mode."""
    from transformers import AutoModelForCausalLM
    cfg.pad_token_id, cfg.eos_token_id = PAD_ID, cfg.vocab_size - 1
    with torch.device(dev):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
        except TypeError:       # transformers before 4.56 calls the argument torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype, attn_implementation="sdpa")
    if next(model.parameters()).dtype != dtype:     # a version that ignored the argument
        model.to(dtype)
    model.eval()
    model.requires_grad_(False)
    return model


class Workload:
    """Seeded random token ids: one context (a passage and its questions) and any number of its self-edits."""

    def __init__(self, vocab: int, n_seqs: int, seed: int):
        self.vocab, self.n_seqs, self.seed = vocab, n_seqs, seed
        self.eos = vocab - 1
        g = torch.Generator().manual_seed(seed)
        self.passage = self._tokens(PASSAGE_TOKENS, g)
        prefix = self._tokens(SHARED_PREFIX, g)
        self.prompts = [prefix + self._tokens(self._length(QUESTION_TOKENS, g), g) for _ in range(QUESTIONS)]

    def _tokens(self, n: int, g: torch.Generator) -> list[int]:
        return torch.randint(1, self.vocab - 1, (n,), generator=g).tolist()   # never the pad (0) nor the eos

    @staticmethod
    def _length(bounds: tuple[int, int], g: torch.Generator) -> int:
        return int(torch.randint(bounds[0], bounds[1] + 1, (1,), generator=g))

    def sequences(self, i: int) -> list[list[int]]:
        """Self-edit i's training sequences: the passage, then its own implication lines."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + i + 1)
        return [self.passage] + [self._tokens(self._length(LINE_TOKENS, g), g) for _ in range(self.n_seqs - 1)]

    def job(self, i: int, epochs: int) -> TrainJob:
        seqs = self.sequences(i)
        return TrainJob(seqs, [[1] * len(s) for s in seqs], lr=LR, epochs=epochs, batch_size=BATCH_SIZE,
                        seed=self.seed + i)

    def tokens_per_epoch(self, i: int) -> int:
        return sum(len(s) for s in self.sequences(i))


class Clock:
    """Wall time that waits for queued GPU work first, and the peak GPU memory since the last reset."""

    def __init__(self, dev: torch.device):
        self.cuda = dev.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2 ** 30 if self.cuda else None


def decode(model, work: Workload, prompts, new_tokens=NEW_TOKENS, pack=None, adapters=None) -> list[list[int]]:
    return greedy_decode(model, prompts, max_new_tokens=new_tokens, stop_ids=[work.eos], pack=pack,
                         adapters=adapters, pad_id=PAD_ID)


def mean_len(gens: list[list[int]]) -> float:
    return sum(len(g) for g in gens) / len(gens)


def run_engine(model, work: Workload, k: int, packs: int, epochs: int, clock: Clock) -> dict:
    """`packs` packs of k adapters each, one after another (lean: k=1; batched: packs=1). Self-edit a*k+j is
    adapter j of pack a. The base answers once; each pack trains, then answers all its questions in one batch."""
    t0 = clock.now()
    base = decode(model, work, work.prompts)
    base_s = clock.now() - t0
    train_s = answer_s = 0.0
    gens, losses = [], []
    for a in range(packs):
        ids = range(a * k, (a + 1) * k)
        t = clock.now()
        with AdapterPack(model, k, RANK, ALPHA, 0.0, TARGETS, seeds=[work.seed + i for i in ids]) as pack:
            outcomes = train_pack(pack, [work.job(i, epochs) for i in ids], **TRAIN_KW)
            t_trained = clock.now()
            # Rows grouped by adapter, as the engine's `generate` orders them.
            gens += decode(model, work, [p for _ in ids for p in work.prompts], pack=pack,
                           adapters=[j for j in range(k) for _ in work.prompts])
            answer_s += clock.now() - t_trained
        train_s += t_trained - t
        failed = [o.failed for o in outcomes if o.failed]
        if failed:
            raise RuntimeError(f"training failed: {failed[0]}")
        losses += [o.final_loss for o in outcomes]
    seconds = clock.now() - t0
    n = k * packs
    return dict(self_edits=n, seconds=seconds, seconds_per_self_edit=seconds / n, train_s=train_s,
                answer_s=answer_s, base_answer_s=base_s, steps_per_self_edit=outcomes[0].steps,
                train_tokens_per_self_edit=sum(work.tokens_per_epoch(i) for i in range(n)) / n * epochs,
                decoded_tokens_mean=mean_len(base + gens), final_loss_mean=sum(losses) / len(losses))


def run_original(model, work: Workload, edits: list[list[list[int]]], prompts, epochs: int, pad_to: int,
                 new_tokens: int, clock: Clock) -> dict:
    """The original's way for each self-edit in `edits` (lists of training sequences); see the docstring.
    Its answers go through seal's decode loop on the PEFT model, as in benchmarks/inner_loop.py (the original
    answered with vLLM), so only the training and the hand-off differ from the engine's."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    cpu = next(model.parameters()).device.type == "cpu"
    bf16 = not cpu and next(model.parameters()).dtype == torch.bfloat16    # the Trainer's mixed precision
    parts = dict(base_answer_s=0.0, trainer_setup_s=0.0, train_s=0.0, save_load_s=0.0, answer_s=0.0)
    gens, steps, losses = [], 0, []
    t0 = clock.now()
    for i, seqs in enumerate(edits):
        t = clock.now()

        def lap(name):
            nonlocal t
            now = clock.now()
            parts[name] += now - t
            t = now

        gens += decode(model, work, prompts, new_tokens)              # the base re-answered every trial
        lap("base_answer_s")
        rows = []
        for s in seqs:
            s = s[:pad_to]
            n = len(s)
            ids = s + [PAD_ID] * (pad_to - n)
            rows.append({"input_ids": ids, "attention_mask": [1] * n + [0] * (pad_to - n), "labels": list(ids)})
        lora = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                          target_modules=list(TARGETS))
        tmp = Path(tempfile.mkdtemp(prefix="seal-gpu-orig-"))
        wrapper = get_peft_model(model, lora)     # whichever PEFT wrapper is on the model, to undo on error
        try:
            args = TrainingArguments(output_dir=str(tmp), per_device_train_batch_size=BATCH_SIZE,
                                     num_train_epochs=epochs, learning_rate=LR, lr_scheduler_type="linear",
                                     weight_decay=0.0, max_grad_norm=1.0, save_strategy="no", logging_steps=1,
                                     report_to="none", seed=work.seed + i, bf16=bf16, disable_tqdm=True,
                                     **({"use_cpu": True} if cpu else {}))
            trainer = Trainer(model=wrapper, args=args, train_dataset=_ListDataset(rows))
            trainer.remove_callback(PrinterCallback)   # it logs every step (as the original); not to stdout
            lap("trainer_setup_s")
            result = trainer.train()
            lap("train_s")
            steps += result.global_step
            losses.append(result.training_loss)
            wrapper.save_pretrained(tmp / "adapter")                    # the hand-off through disk
            base = wrapper.unload()
            wrapper = PeftModel.from_pretrained(base, tmp / "adapter")
            lap("save_load_s")
            gens += decode(wrapper, work, prompts, new_tokens)
            lap("answer_s")
        finally:
            wrapper.unload()
            shutil.rmtree(tmp, ignore_errors=True)
            model.requires_grad_(False)
            model.eval()
    seconds = clock.now() - t0
    n = len(edits)
    return dict(self_edits=n, seconds=seconds, seconds_per_self_edit=seconds / n, **parts, pad_to=pad_to,
                steps_per_self_edit=steps / n, padded_tokens_per_self_edit=pad_to * sum(map(len, edits)) / n * epochs,
                decoded_tokens_mean=mean_len(gens), train_loss_mean=sum(losses) / n)


def smoke(model, work: Workload, pad_to: int, clock: Clock) -> dict:
    """One train_pack step at k=2, one routed greedy_decode of 2 prompts x 4 tokens, one original-way step."""
    t0 = clock.now()
    one_step = [TrainJob([work.passage], [[1] * len(work.passage)], lr=LR, epochs=1, batch_size=1, seed=i)
                for i in range(2)]
    with AdapterPack(model, 2, RANK, ALPHA, 0.0, TARGETS, seeds=[0, 1]) as pack:
        outcomes = train_pack(pack, one_step, **TRAIN_KW)
        t1 = clock.now()
        if any(o.failed or o.steps != 1 for o in outcomes):
            raise RuntimeError(f"train_pack smoke step went wrong: {outcomes}")
        gens = decode(model, work, work.prompts[:2], 4, pack=pack, adapters=[0, 1])
        t2 = clock.now()
        if len(gens) != 2 or not all(1 <= len(g) <= 4 for g in gens):
            raise RuntimeError(f"greedy_decode smoke gave {gens}")
    orig = run_original(model, work, [[work.passage]], work.prompts[:2], 1, pad_to, 4, clock)
    return dict(train_step_s=t1 - t0, decode_s=t2 - t1, original_step_s=orig["seconds"],
                losses=[o.final_loss for o in outcomes], fused_head=fused_head_ok(model))


def at_paper_epochs(rec: dict, epochs: int) -> float:
    """Seconds per self-edit extrapolated to the paper's epochs: training time scaled, the rest unchanged."""
    return (rec["seconds"] + rec["train_s"] * (PAPER_EPOCHS / epochs - 1)) / rec["self_edits"]


class Bench:
    """The run's JSON document, its time budget and the estimates that decide what still fits."""

    def __init__(self, a, dev: torch.device, dtype: torch.dtype):
        import peft
        import transformers
        self.a, self.path, self.dev, self.dtype = a, Path(a.json), dev, dtype
        self.clock = Clock(dev)
        try:
            accelerate = importlib.metadata.version("accelerate")
        except importlib.metadata.PackageNotFoundError:
            accelerate = None
        device = {"type": dev.type, "name": platform.processor() or platform.machine(),
                  "threads": torch.get_num_threads()}
        if dev.type == "cuda":
            props = torch.cuda.get_device_properties(dev)
            device.update(name=props.name, memory_gib=props.total_memory / 2 ** 30)
        self.out = {
            "benchmark": "gpu_inner_loop", "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "transformers": transformers.__version__,
                         "peft": peft.__version__, "accelerate": accelerate},
            "device": device, "dtype": str(dtype).removeprefix("torch."),
            "settings": {
                "archs": a.arch, "epochs": a.epochs, "paper_epochs": PAPER_EPOCHS, "budget_s": a.budget_s,
                "lora": {"rank": RANK, "alpha": ALPHA, "targets": list(TARGETS), "dropout": 0.0},
                "lr": LR, "schedule": "linear", "batch_size": BATCH_SIZE, "max_grad_norm": 1.0,
                "micro_batch_tokens": TRAIN_KW["micro_batch_tokens"], "orig_pad": a.orig_pad,
                "lean_self_edits": a.lean_n, "ks": {arch: list(a.ks or ARCHS[arch].ks) for arch in a.arch},
                "workload": {"sequences_per_self_edit": a.seqs, "passage_tokens": PASSAGE_TOKENS,
                             "line_tokens": list(LINE_TOKENS), "questions": QUESTIONS,
                             "prompt_shared_prefix_tokens": SHARED_PREFIX,
                             "question_own_tokens": list(QUESTION_TOKENS), "new_tokens": NEW_TOKENS,
                             "seed": a.seed, "loss_on": "every token"},
            },
            "notes": [
                ("Models are randomly initialised (transformers from_config), so timings are real but answers "
                 "and losses mean nothing."),
                ("Greedy decoding stops only at the vocabulary's last id, which the data never contains and a random "
                 "model rarely emits, so it runs to new_tokens; decoded_tokens_mean says how far it went."),
                ("seconds_per_self_edit: the stage's wall time (GPU synchronised) over its self-edits, base answers "
                 "included (lean and batched answer the base once per stage, original once per self-edit)."),
                ("*_10_epochs_est: train_s * paper_epochs / epochs + the rest of the time, per self-edit (original: "
                 "train_s is Trainer.train alone; lean/batched: adapter creation + train_pack)."),
                ("batched answers all k*questions rows in one greedy_decode call; the engine's generate() would cut "
                 "them into batches of the domain's answer_batch (32 rows for knowledge)."),
                ("original answers through seal's greedy_decode on the PEFT model, as benchmarks/inner_loop.py does "
                 "(the original used vLLM)."),
                "peak_gpu_gib: torch.cuda.max_memory_allocated during the stage (weights included).",
            ],
            "records": [], "summary": {}, "elapsed_s": 0.0, "finished": False,
        }
        self.state: dict[str, dict] = {}    # per architecture: measured times the estimates scale from

    def elapsed(self) -> float:
        return time.perf_counter() - T_START

    def save(self) -> None:
        self.out["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.out, indent=2))
        os.replace(tmp, self.path)      # a kill mid-write leaves the previous document whole

    def add(self, rec: dict) -> None:
        self.out["records"].append(rec)
        self._summarize()
        self.save()

    def fits(self, arch: str, stage: str, estimate: float, **key) -> bool:
        """Whether the stage fits the budget; if not, record it as skipped."""
        if self.elapsed() + estimate <= self.a.budget_s:
            return True
        reason = f"elapsed {self.elapsed():.0f} s + estimate {estimate:.0f} s > budget {self.a.budget_s:.0f} s"
        self.add({"arch": arch, "stage": stage, **key, "skipped": True, "reason": reason})
        print(f"{arch} {stage}{''.join(f' {k}={v}' for k, v in key.items())}: skipped ({reason})", flush=True)
        return False

    # Estimates: cautious, i.e. scaled from the nearest measured stage as if nothing were fixed cost.
    def estimate_smoke(self, cfg) -> float:
        """The last architecture's build and smoke time, scaled by parameters; the first always runs."""
        done = [s for s in self.state.values() if "setup_s" in s]
        if not done:
            return 0.0
        return CAUTION * done[-1]["setup_s"] * approx_params(cfg) / done[-1]["params"]

    def _k1(self, st: dict) -> float:
        """Seconds per self-edit of one adapter alone: measured if a k=1 engine stage ran, else from the smoke
        (its one train step times the steps of a self-edit, its 4-token decodes times 32/4, base and adapter)."""
        if "k1_s" in st:
            return st["k1_s"]
        sm = st["smoke"]
        return sm["train_step_s"] * self.a.seqs * self.a.epochs + 2 * sm["decode_s"] * NEW_TOKENS / 4

    def estimate(self, st: dict, stage: str, k: int = 1) -> float:
        if stage == "original":
            # The smoke's original step scaled by the stage's train steps or its decode steps, the larger.
            return CAUTION * st["smoke"]["original_step_s"] * max(self.a.seqs * self.a.epochs, NEW_TOKENS / 4)
        if stage == "lean":
            # The original way is slower than lean, so its time per self-edit is a cautious stand-in.
            ref = st.get("k1_s") or st.get("original_s") or self._k1(st)
            return CAUTION * self.a.lean_n * ref
        if "batched" in st:
            last_k, last_s = st["batched"]
            return CAUTION * last_s * k / last_k
        return CAUTION * k * self._k1(st)

    def _summarize(self) -> None:
        ep = self.a.epochs
        summary = {}
        for arch in self.a.arch:
            done = [r for r in self.out["records"] if r["arch"] == arch and "seconds_per_self_edit" in r]
            spe, spe10 = {"batched": {}}, {"batched": {}}
            for r in done:
                if r["stage"] == "batched":
                    spe["batched"][str(r["k"])] = r["seconds_per_self_edit"]
                    spe10["batched"][str(r["k"])] = at_paper_epochs(r, ep)
                else:
                    spe[r["stage"]], spe10[r["stage"]] = r["seconds_per_self_edit"], at_paper_epochs(r, ep)
            if not done:
                continue
            s = {"seconds_per_self_edit": spe, f"seconds_per_self_edit_{PAPER_EPOCHS}_epochs_est": spe10}
            for tag, table in (("", spe), (f"_{PAPER_EPOCHS}_epochs_est", spe10)):
                for ref in ("lean", "original"):
                    if ref in table:
                        s[f"batched_over_{ref}{tag}"] = {k: table[ref] / v for k, v in table["batched"].items()}
                if "lean" in table and "original" in table:
                    s[f"lean_over_original{tag}"] = table["original"] / table["lean"]
            s["self_edits_per_minute"] = {
                **{m: 60 / spe[m] for m in ("original", "lean") if m in spe},
                "batched": {k: 60 / v for k, v in spe["batched"].items()}}
            summary[arch] = s
        self.out["summary"] = summary


def ratio_text(bench: Bench, arch: str, k: int) -> str:
    s = bench.out["summary"].get(arch, {})
    parts = [f"{s[f'batched_over_{ref}'][str(k)]:.1f}x {ref}" for ref in ("lean", "original")
             if str(k) in s.get(f"batched_over_{ref}", {})]
    return ("; " + ", ".join(parts)) if parts else ""


def gib(x: float | None) -> str:
    return f"; peak {x:.1f} GiB" if x is not None else ""


def run_arch(bench: Bench, arch: str) -> bool:
    """Build, smoke-test and time one architecture. False when the smoke test failed (the run stops)."""
    a, clock, dev = bench.a, bench.clock, bench.dev
    cfg = ARCHS[arch].config()
    if not bench.fits(arch, "smoke", bench.estimate_smoke(cfg)):
        return True
    st = bench.state.setdefault(arch, {})
    clock.reset_peak()
    t0 = clock.now()
    try:
        model = build_model(cfg, dev, bench.dtype)
        build_s = clock.now() - t0
        params = sum(p.numel() for p in model.parameters())
        weights = torch.cuda.memory_allocated() / 2 ** 30 if clock.cuda else None
        work = Workload(cfg.vocab_size, a.seqs, a.seed)
        res = smoke(model, work, a.orig_pad, clock)
    except Exception as e:  # noqa: BLE001 (any failure here means the machine cannot run this benchmark)
        traceback.print_exc()
        bench.add({"arch": arch, "stage": "smoke", "error": f"{type(e).__name__}: {e}"})
        print(f"{arch} smoke: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return False
    st.update(smoke=res, setup_s=clock.now() - t0, params=params)
    bench.add({"arch": arch, "stage": "smoke", "build_s": build_s, "params": params, "weights_gib": weights,
               **res, "peak_gpu_gib": clock.peak_gib()})
    print(f"{arch} smoke: built in {build_s:.1f} s ({params / 1e6:,.1f} M params); train_pack step k=2 "
          f"{res['train_step_s']:.2f} s, decode 2x4 {res['decode_s']:.2f} s, original step "
          f"{res['original_step_s']:.2f} s{gib(clock.peak_gib())}", flush=True)

    ok = True
    ks = a.ks or ARCHS[arch].ks
    for stage in ARCHS[arch].order:
        for k in (ks if stage == "batched" else [1]):
            key = {"k": k} if stage == "batched" else {}
            if not bench.fits(arch, stage, bench.estimate(st, stage, k), **key):
                continue
            clock.reset_peak()
            try:
                if stage == "original":
                    res = run_original(model, work, [work.sequences(0)], work.prompts, a.epochs, a.orig_pad,
                                       NEW_TOKENS, clock)
                elif stage == "lean":
                    res = run_engine(model, work, 1, a.lean_n, a.epochs, clock)
                else:
                    res = run_engine(model, work, k, 1, a.epochs, clock)
            except Exception as e:  # noqa: BLE001 (record it, free memory, go on with the other stages)
                traceback.print_exc()
                bench.add({"arch": arch, "stage": stage, **key, "error": f"{type(e).__name__}: {e}",
                           "peak_gpu_gib": clock.peak_gib()})
                print(f"{arch} {stage}{f' k={k}' if key else ''}: FAILED: {type(e).__name__}: {e}", flush=True)
                ok = False
                gc.collect()
                if clock.cuda:
                    torch.cuda.empty_cache()
                continue
            spe = res["seconds_per_self_edit"]
            if stage == "original":
                st["original_s"] = spe
            elif k == 1:
                st["k1_s"] = spe
            if stage == "batched":
                st["batched"] = (k, res["seconds"])
            bench.add({"arch": arch, "stage": stage, **key, "epochs": a.epochs, **res,
                       f"seconds_per_self_edit_{PAPER_EPOCHS}_epochs_est": at_paper_epochs(res, a.epochs),
                       "peak_gpu_gib": clock.peak_gib()})
            peak = gib(clock.peak_gib())
            if stage == "original":
                print(f"{arch} original k=1: {spe:.2f} s per self-edit (train {res['train_s']:.2f} s, trainer setup "
                      f"{res['trainer_setup_s']:.2f} s, base answers {res['base_answer_s']:.2f} s, save/load "
                      f"{res['save_load_s']:.2f} s, answers {res['answer_s']:.2f} s){peak}", flush=True)
            elif stage == "lean":
                vs = bench.out["summary"][arch].get("lean_over_original")
                n = res["self_edits"]
                print(f"{arch} lean x{n}: {spe:.2f} s per self-edit (each: train {res['train_s'] / n:.2f} s, answers "
                      f"{res['answer_s'] / n:.2f} s; base answers once {res['base_answer_s']:.2f} s)"
                      f"{f'; {vs:.1f}x original' if vs else ''}{peak}", flush=True)
            else:
                print(f"{arch} batched k={k}: {spe:.3f} s per self-edit, {res['seconds']:.2f} s in all (train "
                      f"{res['train_s']:.2f} s, answers {res['answer_s']:.2f} s, base answers {res['base_answer_s']:.2f} s)"
                      f"{ratio_text(bench, arch, k)}{peak}", flush=True)
    del model
    gc.collect()
    if clock.cuda:
        torch.cuda.empty_cache()
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_inner_loop.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="llama-1b,qwen-7b", help=f"comma-separated, of {', '.join(ARCHS)}")
    ap.add_argument("--json", required=True, help="the JSON file, rewritten after every record")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--ks", help="batched pack sizes, comma-separated (default: 1..64 for llama-1b, 1..32 for qwen-7b)")
    ap.add_argument("--epochs", type=int, default=2, help=f"training epochs of every stage (the paper's: {PAPER_EPOCHS})")
    ap.add_argument("--orig-pad", type=int, default=2048, help="padded row length of the original way (its own: 2048)")
    ap.add_argument("--lean-n", type=int, default=4, help="self-edits the lean stage runs in sequence (at most 8)")
    ap.add_argument("--seqs", type=int, default=4, help="training sequences per self-edit (the passage and lines)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip stages that would end after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    a.arch = list(dict.fromkeys(x.strip() for x in a.arch.split(",") if x.strip()))
    unknown = [x for x in a.arch if x not in ARCHS]
    if unknown:
        ap.error(f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(ARCHS)}")
    a.ks = [int(x) for x in a.ks.split(",")] if a.ks else None
    if not 1 <= a.lean_n <= 8:
        ap.error("--lean-n must be between 1 and 8")
    if a.epochs < 1 or a.seqs < 1:
        ap.error("--epochs and --seqs must be at least 1")
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; use --device cpu (with --arch tiny) for a trial", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    import transformers
    transformers.logging.set_verbosity_error()      # its per-call advice would bury the stage lines

    bench = Bench(a, dev, dtype)
    bench.save()
    v = bench.out["versions"]
    print(f"{bench.out['device']['name']}, {bench.out['dtype']}; torch {v['torch']}, transformers "
          f"{v['transformers']}, peft {v['peft']}; {a.epochs} epochs, budget {a.budget_s:.0f} s", flush=True)
    ok = True
    for arch in a.arch:
        if not run_arch(bench, arch):
            bench.out["exit"] = "smoke test failed"
            bench.save()
            return 1
        ok = ok and not any(r["arch"] == arch and "error" in r for r in bench.out["records"])
    bench.out["finished"] = True
    bench.save()
    print(f"wrote {a.json} ({bench.elapsed():.0f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

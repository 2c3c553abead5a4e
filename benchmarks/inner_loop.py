"""`python benchmarks/inner_loop.py`: the inner loop three ways, in one process, on the same model, data and settings.

(a) original: a faithful re-creation of the original code's way. For every self-edit: a fresh PEFT adapter on
    the model, the transformers Trainer, every sequence padded to a fixed length with the padding in the loss
    (labels = input_ids, pad included), the base model's answers regenerated, the adapter saved to disk and
    loaded back for answering, then unloaded.
(b) lean: our engine one adapter at a time (no padding in the loss, base answers cached, adapters in memory).
(c) batched: our engine, k adapters trained together and answered in one generation (the default path).

It prints self-edit evaluations per minute, the ratios, training FLOP/s against a matmul peak measured in the
same run, peak memory, and how time grows with k and with the number of training sequences.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch


class PeakRSS:
    """Samples the process's resident memory in a thread; `peak` is the maximum seen (MiB)."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()

    @staticmethod
    def now() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self):
        self.peak = self.now()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.now())


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of a large square matmul, the practical peak of this machine for this dtype."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - t0)


def train_flops_per_token(model, targets: tuple[str, ...], rank: int) -> float:
    """Matmul FLOPs of one training token with a frozen base: forward (2*in*out per Linear, output head
    included) and the input-gradient backward (the same again); LoRA adds forward, input and weight grads."""
    from seal.engine.lora import find_targets
    total = 0.0
    lora = set(find_targets(model, targets))
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            total += 4 * m.in_features * m.out_features
            if name in lora:
                total += 6 * rank * (m.in_features + m.out_features)
    return total


def _self_edits(lm, domain, passages, k, seed, max_new_tokens):
    from seal.engine.generation import generate
    prompts = [domain.self_edit_prompt(p) for p in passages for _ in range(k)]
    return generate(lm, prompts, max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, seed=seed,
                    batch_size=len(prompts))


def run_original(lm, domain, trials, cfg, pad_to: int) -> dict:
    """(a) the original's way, per self-edit (see the module docstring)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    tok = lm.tokenizer
    pad = tok.pad_token_id
    real_tokens = padded_tokens = 0
    t_train = 0.0
    t0 = time.perf_counter()
    for t in trials:
        domain.grade(t.context, _answers_plain(lm, domain, t.context))          # base re-evaluated every trial
        rows = []
        for text in t.update.texts:
            ids = tok(text)["input_ids"][:pad_to]
            n = len(ids)
            real_tokens += n * cfg.epochs
            padded_tokens += pad_to * cfg.epochs
            ids = ids + [pad] * (pad_to - n)
            rows.append({"input_ids": ids, "attention_mask": [1] * n + [0] * (pad_to - n),
                         "labels": list(ids)})                                  # padding in the loss
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                          task_type="CAUSAL_LM", target_modules=list(cfg.target_modules))
        peft_model = get_peft_model(lm.model, lora)
        tmp = Path(tempfile.mkdtemp(prefix="seal-orig-"))
        args = TrainingArguments(output_dir=str(tmp), per_device_train_batch_size=cfg.batch_size,
                                 num_train_epochs=cfg.epochs, learning_rate=cfg.lr, lr_scheduler_type="linear",
                                 weight_decay=0.0, max_grad_norm=1.0, save_strategy="no", logging_steps=1,
                                 report_to=[], seed=t.seed, use_cpu=lm.device.type == "cpu",
                                 bf16=lm.dtype == torch.bfloat16, disable_tqdm=True)
        ts = time.perf_counter()
        trainer = Trainer(model=peft_model, args=args, train_dataset=_ListDataset(rows))
        trainer.remove_callback(PrinterCallback)   # it logs every step (as the original); just not to stdout
        trainer.train()
        t_train += time.perf_counter() - ts
        peft_model.save_pretrained(tmp / "final_adapter")                       # the hand-off through disk
        base = peft_model.unload()
        loaded = PeftModel.from_pretrained(base, tmp / "final_adapter")
        answers = _answers_plain(replace(lm, model=loaded), domain, t.context)
        domain.grade(t.context, answers)
        loaded.unload()
        shutil.rmtree(tmp, ignore_errors=True)
        for p in lm.model.parameters():
            p.requires_grad_(False)
    return {"seconds": time.perf_counter() - t0, "train_seconds": t_train, "real_tokens": real_tokens,
            "padded_tokens": padded_tokens}


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {k: torch.tensor(v) for k, v in self.rows[i].items()}


def _answers_plain(lm, domain, context):
    from seal.engine.generation import generate
    return generate(lm, domain.eval_prompts(context), max_new_tokens=32, stop_at_newline=True)


def run_engine(lm, domain, trials, cfg) -> dict:
    from seal.engine.inner import InnerLoop
    from seal.engine.training import tokenize_update
    loop = InnerLoop(lm, domain, cfg, show_progress=False)
    contexts = list({id(t.context): t.context for t in trials}.values())
    t0 = time.perf_counter()
    loop.base_evaluations(contexts)                                              # once per context
    results = loop.run(trials)
    seconds = time.perf_counter() - t0
    tokens = sum(len(s) for t in trials for s in tokenize_update(lm.tokenizer, t.update, cfg.max_seq_len)[0])
    return {"seconds": seconds, "real_tokens": tokens * cfg.epochs, "train_seconds": None,
            "rewards": [r.reward for r in results]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/inner_loop.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=5, help="self-edits (adapters) of one passage")
    ap.add_argument("--preset", default="paper", help="inner-loop preset (default: the paper's hyperparameters)")
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--orig-pad", type=int, default=512,
                    help="padded length of the original's rows (it used 2048; 512 is in its favour)")
    ap.add_argument("--orig-k", type=int, default=1, help="self-edits measured for (a), the slowest path")
    ap.add_argument("--scale-k", default="1,2,4,8,16", help="adapter counts for the scaling table")
    ap.add_argument("--scale-lines", default="2,4,8,16", help="training-sequence counts for the scaling table")
    ap.add_argument("--scale-epochs", type=int, default=2, help="epochs in the scaling runs (kept short)")
    ap.add_argument("--skip-original", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--dtype")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the numbers to this file")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the comparison: profile the batched path (k adapters, --scale-epochs epochs) "
                         "and print where the time goes, by phase and by operator")
    a = ap.parse_args(argv)

    from seal.engine.config import inner_preset
    from seal.domains.knowledge import KnowledgeDomain, builtin_passages, select
    from seal.engine.generation import render_prompt
    from seal.engine.inner import Trial
    from seal.logging_setup import quiet_libraries
    from seal.engine.models import load_model
    quiet_libraries()

    lm = load_model(a.model, dtype=a.dtype)
    cfg = inner_preset(a.preset, **({"epochs": a.epochs} if a.epochs else {}))
    domain = KnowledgeDomain("implications", render=lambda t, p="": render_prompt(lm, t, p))
    passage = select(builtin_passages("eval"), 1, seed=42)[0]
    edits = _self_edits(lm, domain, [passage], max(a.k, 16), a.seed, 160)
    trials = [Trial(i, passage, domain.parse_self_edit(passage, e), seed=a.seed + i) for i, e in enumerate(edits)]
    trials = [t for t in trials if not t.update.error]
    main_trials = trials[:a.k]
    n_seqs = sum(len(t.update.texts) for t in main_trials) / len(main_trials)
    print(f"model {lm.name} ({lm.dtype}, {lm.device}, {torch.get_num_threads()} threads); preset {a.preset}: "
          f"r{cfg.rank}/alpha{cfg.alpha:g} on {','.join(cfg.target_modules)}, lr {cfg.lr:g}, {cfg.epochs} epochs, "
          f"batch {cfg.batch_size}; k={a.k}, {n_seqs:.1f} sequences per self-edit")
    peak = matmul_peak(lm.dtype)
    fpt = train_flops_per_token(lm.model, cfg.target_modules, cfg.rank)
    print(f"matmul peak ({lm.dtype}, 2048^3): {peak / 1e9:.1f} GFLOP/s; training FLOPs per token: {fpt / 1e6:.0f} M")
    out: dict = {"model": lm.name, "dtype": str(lm.dtype), "threads": torch.get_num_threads(), "preset": a.preset,
                 "inner": {"rank": cfg.rank, "alpha": cfg.alpha, "targets": list(cfg.target_modules), "lr": cfg.lr,
                           "epochs": cfg.epochs, "batch_size": cfg.batch_size},
                 "k": a.k, "sequences_per_self_edit": n_seqs, "matmul_peak_flops": peak,
                 "train_flops_per_token": fpt, "methods": {}}

    if a.profile:
        return profile(lm, domain, main_trials, replace(cfg, epochs=a.scale_epochs, adapters_per_pack=a.k), a.json)

    def report(name, trials_, res, mem):
        per_min = len(trials_) / res["seconds"] * 60
        flops = fpt * res["real_tokens"] / (res["train_seconds"] or res["seconds"])
        res.update(evals_per_minute=per_min, useful_flops=flops, useful_fraction_of_peak=flops / peak,
                   peak_rss_mib=mem.peak, n=len(trials_))
        out["methods"][name] = res
        print(f"  {name:9s} {len(trials_):2d} self-edits in {res['seconds']:7.1f} s: {per_min:6.2f} evals/min; "
              f"useful training {flops / 1e9:6.1f} GFLOP/s = {100 * flops / peak:4.1f}% of peak; "
              f"peak RSS {mem.peak:,.0f} MiB")

    if not a.skip_original:
        with PeakRSS() as mem:
            res = run_original(lm, domain, trials[:a.orig_k], cfg, a.orig_pad)
        report("original", trials[:a.orig_k], res, mem)
    with PeakRSS() as mem:
        res = run_engine(lm, domain, main_trials, replace(cfg, adapters_per_pack=1))
    report("lean", main_trials, res, mem)
    with PeakRSS() as mem:
        res = run_engine(lm, domain, main_trials, replace(cfg, adapters_per_pack=a.k))
    report("batched", main_trials, res, mem)
    m = out["methods"]
    ratios = {"batched/lean": m["batched"]["evals_per_minute"] / m["lean"]["evals_per_minute"]}
    if "original" in m:
        ratios["batched/original"] = m["batched"]["evals_per_minute"] / m["original"]["evals_per_minute"]
        ratios["lean/original"] = m["lean"]["evals_per_minute"] / m["original"]["evals_per_minute"]
    out["ratios"] = ratios
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))

    scale_cfg = replace(cfg, epochs=a.scale_epochs)
    out["scaling_k"], out["scaling_lines"] = [], []
    print(f"scaling ({a.scale_epochs} epochs): adapters trained together, time and time per adapter")
    for k in [int(x) for x in a.scale_k.split(",")]:
        ts = [replace(trials[i % len(trials)], key=i) for i in range(k)]
        res = run_engine(lm, domain, ts, replace(scale_cfg, adapters_per_pack=k))
        out["scaling_k"].append({"k": k, "seconds": res["seconds"], "per_adapter": res["seconds"] / k})
        print(f"  k={k:2d}: {res['seconds']:6.1f} s, {res['seconds'] / k:5.1f} s per adapter")
    print(f"scaling ({a.scale_epochs} epochs, k={a.k}): training sequences per self-edit")
    lines_pool = [ln for t in trials for ln in t.update.texts[:-1]]
    for n in [int(x) for x in a.scale_lines.split(",")]:
        ts = []
        for i in range(a.k):
            texts = [lines_pool[(i * n + j) % len(lines_pool)] for j in range(n)]
            ts.append(replace(trials[0], key=i, update=replace(trials[0].update, texts=texts)))
        res = run_engine(lm, domain, ts, replace(scale_cfg, adapters_per_pack=a.k))
        out["scaling_lines"].append({"sequences": n, "seconds": res["seconds"]})
        print(f"  {n:2d} sequences: {res['seconds']:6.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {a.json}")
    return 0


def profile(lm, domain, trials, cfg, json_path=None) -> int:
    """Where the batched inner loop's time goes: wall time per phase (training, the adapters' answers, the base
    answers) and the operators that take the most CPU time, from torch.profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from seal.engine.inner import InnerLoop
    loop = InnerLoop(lm, domain, cfg, show_progress=False)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        loop.base_evaluations([trials[0].context])
        loop.run(trials)
        total = time.perf_counter() - t0
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e6 for e in events if e.key.startswith("seal:")}
    ops = sorted((e for e in events if not e.key.startswith("seal:")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)
    op_total = sum(e.self_cpu_time_total for e in ops) / 1e6
    print(f"profile: {len(trials)} adapters, {cfg.epochs} epochs, {total:.1f} s wall (under the profiler)")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {k:22s} {v:7.1f} s  {100 * v / total:5.1f}%")
    print(f"  {'other':22s} {total - sum(phases.values()):7.1f} s")
    rows = [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in ops[:15]]
    print("operators by self CPU time (summed over threads' wall time):")
    for r in rows:
        print(f"  {r['op']:40s} {r['self_cpu_s']:7.1f} s  {100 * r['self_cpu_s'] / op_total:5.1f}%  {r['calls']:7d} calls")
    if json_path:
        Path(json_path).write_text(json.dumps({"wall_seconds": total, "phases": phases, "operators": rows,
                                               "operator_total_seconds": op_total}, indent=2))
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python benchmarks/inner_loop.py`: the inner loop three ways, in one process, on the same model, data and settings.

(a) original: a faithful re-creation of the original code's way. For every self-edit: a fresh PEFT adapter on
    the model, the transformers Trainer, every sequence padded to a fixed length with the padding in the loss
    (labels = input_ids, pad included), the base model's answers regenerated, the adapter saved to disk and
    loaded back for answering, then unloaded.
(b) lean: our engine one adapter at a time (packed rows, head only at targets, seal's decode loop, base
    answers cached, adapters in memory).
(c) batched: our engine, k adapters trained together and answered in one generation (the default path), and
    the same with round 1's paths (padded micro-batches, full head, transformers' generate), in the same run.

It prints self-edit evaluations per minute, the ratios, training-phase FLOP/s against a matmul peak measured in
the same run, answering time per question, peak memory; then answering alone (generate vs seal's loop on the
same adapters, fp32 vs bf16), how time grows with k and with the number of training sequences, and what
torch.compile does.
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
    """Our engine on `trials`: base answers once per context, then the trials in packs. Returns the wall time,
    each phase's seconds (InnerLoop.timings), the questions answered, the real training tokens, the rewards."""
    from seal.engine.inner import InnerLoop
    from seal.engine.training import tokenize_update
    loop = InnerLoop(lm, domain, cfg, show_progress=False)
    contexts = list({id(t.context): t.context for t in trials}.values())
    t0 = time.perf_counter()
    loop.base_evaluations(contexts)                                              # once per context
    results = loop.run(trials)
    seconds = time.perf_counter() - t0
    tokens = sum(len(s) for t in trials for s in tokenize_update(lm.tokenizer, t.update, cfg.max_seq_len)[0])
    answer_s = loop.timings.get("base-answers", 0.0) + loop.timings.get("adapter-answers", 0.0)
    return {"seconds": seconds, "real_tokens": tokens * cfg.epochs, "train_seconds": loop.timings.get("train"),
            "answer_seconds": answer_s, "questions": loop.questions,
            "seconds_per_question": answer_s / max(1, loop.questions), "rewards": [r.reward for r in results]}


# The methods of the main table: (name, adapters per pack (None: --k), packed training, decoder).
ENGINE_METHODS = [("lean", 1, True, "seal"), ("batched", None, True, "seal"),
                  ("batched, round 1", None, False, "hf")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/inner_loop.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=8, help="self-edits (adapters) of one passage")
    ap.add_argument("--preset", default="paper", help="inner-loop preset (default: the paper's hyperparameters)")
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--orig-pad", type=int, default=2048, help="padded length of the original's rows (its own: 2048)")
    ap.add_argument("--orig-k", type=int, default=1, help="self-edits measured for (a), the slowest path")
    ap.add_argument("--scale-k", default="1,2,4,8,16", help="adapter counts for the scaling table")
    ap.add_argument("--scale-lines", default="2,4,8,16", help="training-sequence counts for the scaling table")
    ap.add_argument("--scale-epochs", type=int, default=2, help="epochs in the scaling runs (kept short)")
    ap.add_argument("--answer-passages", type=int, default=20,
                    help="built-in eval passages for the fp32-vs-bf16 answering comparison (0: skip it)")
    ap.add_argument("--compile-packs", type=int, default=3,
                    help="packs timed with and without torch.compile (0: skip; it runs last, as it changes the model)")
    ap.add_argument("--skip-original", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--dtype")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the numbers to this file (rewritten after every stage)")
    ap.add_argument("--train-phase", type=int, default=0, metavar="REPS",
                    help="instead of the comparison: the training phase alone (k adapters, --scale-epochs epochs), "
                         "REPS times, each between two matmul-peak readings, packed and padded alternately")
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
    main_trials = [replace(trials[i % len(trials)], key=i) for i in range(a.k)]
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

    def save():
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2))

    if a.train_phase:
        out["train_phase"] = train_phase(lm, main_trials, replace(cfg, epochs=a.scale_epochs), fpt, a.train_phase)
        save()
        return 0
    if a.profile:
        return profile(lm, domain, main_trials, replace(cfg, epochs=a.scale_epochs, adapters_per_pack=a.k), a.json)

    def report(name, trials_, res, mem):
        per_min = len(trials_) / res["seconds"] * 60
        train_flops = fpt * res["real_tokens"] / res["train_seconds"]
        res.update(evals_per_minute=per_min, train_flops=train_flops, train_fraction_of_peak=train_flops / peak,
                   whole_fraction_of_peak=fpt * res["real_tokens"] / res["seconds"] / peak,
                   peak_rss_mib=mem.peak, n=len(trials_))
        out["methods"][name] = res
        spq = res.get("seconds_per_question")
        print(f"  {name:17s} {len(trials_):2d} self-edits in {res['seconds']:7.1f} s: {per_min:6.2f} evals/min; "
              f"training {res['train_seconds']:6.1f} s at {train_flops / 1e9:6.1f} GFLOP/s = "
              f"{100 * train_flops / peak:4.1f}% of peak"
              + (f"; {1000 * spq:5.0f} ms per question" if spq else "") + f"; peak RSS {mem.peak:,.0f} MiB")
        save()

    if not a.skip_original:
        with PeakRSS() as mem:
            res = run_original(lm, domain, trials[:a.orig_k], cfg, a.orig_pad)
        res["pad_to"] = a.orig_pad
        report("original", trials[:a.orig_k], res, mem)
    for name, per_pack, packed, decoder in ENGINE_METHODS:
        run_cfg = replace(cfg, adapters_per_pack=per_pack or a.k, packed=packed, decoder=decoder)
        with PeakRSS() as mem:
            res = run_engine(lm, domain, main_trials, run_cfg)
        res.update(packed=packed, decoder=decoder, adapters_per_pack=run_cfg.adapters_per_pack)
        report(name, main_trials, res, mem)
    peak_after = matmul_peak(lm.dtype)
    out["matmul_peak_flops_after"] = peak_after
    print(f"matmul peak again: {peak_after / 1e9:.1f} GFLOP/s")
    m = out["methods"]
    ratios = {"batched/lean": m["batched"]["evals_per_minute"] / m["lean"]["evals_per_minute"],
              "batched/round 1": m["batched"]["evals_per_minute"] / m["batched, round 1"]["evals_per_minute"]}
    if "original" in m:
        ratios["batched/original"] = m["batched"]["evals_per_minute"] / m["original"]["evals_per_minute"]
        ratios["lean/original"] = m["lean"]["evals_per_minute"] / m["original"]["evals_per_minute"]
    out["ratios"] = ratios
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    save()

    out["answering"] = compare_decoders(lm, domain, main_trials, replace(cfg, epochs=a.scale_epochs))
    save()
    if a.answer_passages:
        out["bf16_answering"] = compare_dtypes(lm, domain, builtin_passages("eval")[:a.answer_passages], a.model)
        save()

    scale_cfg = replace(cfg, epochs=a.scale_epochs)
    out["scaling_k"], out["scaling_lines"] = [], []
    print(f"scaling ({a.scale_epochs} epochs): adapters trained together, time and time per adapter")
    for k in [int(x) for x in a.scale_k.split(",")]:
        ts = [replace(trials[i % len(trials)], key=i) for i in range(k)]
        res = run_engine(lm, domain, ts, replace(scale_cfg, adapters_per_pack=k))
        out["scaling_k"].append({"k": k, "seconds": res["seconds"], "per_adapter": res["seconds"] / k,
                                 "train_seconds": res["train_seconds"],
                                 "train_fraction_of_peak": fpt * res["real_tokens"] / res["train_seconds"] / peak})
        print(f"  k={k:2d}: {res['seconds']:6.1f} s, {res['seconds'] / k:5.1f} s per adapter; training "
              f"{res['train_seconds']:5.1f} s = {100 * out['scaling_k'][-1]['train_fraction_of_peak']:4.1f}% of peak")
        save()
    print(f"scaling ({a.scale_epochs} epochs, k={a.k}): training sequences per self-edit")
    lines_pool = [ln for t in trials for ln in t.update.texts[:-1]]
    for n in [int(x) for x in a.scale_lines.split(",")]:
        ts = []
        for i in range(a.k):
            texts = [lines_pool[(i * n + j) % len(lines_pool)] for j in range(n)]
            ts.append(replace(trials[0], key=i, update=replace(trials[0].update, texts=texts)))
        res = run_engine(lm, domain, ts, replace(scale_cfg, adapters_per_pack=a.k))
        out["scaling_lines"].append({"sequences": n, "seconds": res["seconds"], "train_seconds": res["train_seconds"]})
        print(f"  {n:2d} sequences: {res['seconds']:6.1f} s (training {res['train_seconds']:5.1f} s)")
        save()
    if a.compile_packs:
        out["compile"] = compare_compile(lm, domain, main_trials, replace(scale_cfg, adapters_per_pack=a.k),
                                         a.compile_packs)
        save()
    if a.json:
        print(f"wrote {a.json}")
    return 0


def _train_jobs(lm, trials, cfg):
    """The trials' train jobs with the settings of `cfg` (as InnerLoop builds them, without overrides)."""
    from seal.engine.training import TrainJob, tokenize_update
    jobs = []
    for t in trials:
        ids, masks = tokenize_update(lm.tokenizer, t.update, cfg.max_seq_len)
        jobs.append(TrainJob(ids, masks, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=t.seed))
    return jobs


def train_phase(lm, trials, cfg, fpt: float, reps: int) -> dict:
    """The share of the matmul peak during training alone. The peak of this machine drifts by 10-20% within
    minutes, so each training run is put between two peak readings and compared with their mean; packed and
    padded (round 1) runs alternate."""
    from seal.engine.lora import AdapterPack
    from seal.engine.training import train_pack
    jobs = _train_jobs(lm, trials, cfg)
    tokens = sum(len(s) for j in jobs for s in j.input_ids) * cfg.epochs
    runs = []
    for r in range(reps):
        for packed in (True, False):
            before = matmul_peak(lm.dtype)
            with AdapterPack(lm.model, len(jobs), cfg.rank, cfg.alpha, 0.0, cfg.target_modules,
                             seeds=[j.seed for j in jobs]) as pack:
                t0 = time.perf_counter()
                train_pack(pack, jobs, pad_id=lm.tokenizer.pad_token_id, packed=packed)
                seconds = time.perf_counter() - t0
            after = matmul_peak(lm.dtype)
            share = fpt * tokens / seconds / ((before + after) / 2)
            runs.append({"packed": packed, "seconds": seconds, "peak_before": before, "peak_after": after,
                         "fraction_of_peak": share})
            print(f"  {'packed' if packed else 'padded'}: {seconds:5.1f} s, peak {before / 1e9:.0f}/{after / 1e9:.0f}"
                  f" GFLOP/s, {100 * share:.1f}% of peak", flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    res = {"adapters": len(jobs), "epochs": cfg.epochs, "tokens": tokens, "runs": runs,
           "median_fraction": {name: med([x["fraction_of_peak"] for x in runs if x["packed"] == flag])
                               for name, flag in (("packed", True), ("padded", False))}}
    print(f"training phase, {len(jobs)} adapters: median share of peak packed "
          f"{100 * res['median_fraction']['packed']:.1f}%, padded {100 * res['median_fraction']['padded']:.1f}%")
    return res


def compare_decoders(lm, domain, trials, cfg) -> dict:
    """Answering alone, transformers' generate vs seal's decode loop, on the same trained adapters (one pack of
    all `trials`) and the base: seconds per question of each (two alternating runs each, the faster kept) and
    whether the answers are identical."""
    from seal.engine.inner import InnerLoop
    from seal.engine.lora import AdapterPack
    from seal.engine.training import train_pack
    jobs = _train_jobs(lm, trials, cfg)
    contexts = [t.context for t in trials]
    times: dict[str, list[float]] = {"hf": [], "seal": []}
    answers = {}
    with AdapterPack(lm.model, len(trials), cfg.rank, cfg.alpha, 0.0, cfg.target_modules,
                     seeds=[t.seed for t in trials]) as pack:
        train_pack(pack, jobs, pad_id=lm.tokenizer.pad_token_id)
        for decoder in ("hf", "seal", "hf", "seal"):
            loop = InnerLoop(lm, domain, replace(cfg, decoder=decoder), show_progress=False)
            t0 = time.perf_counter()
            got = loop.answer(contexts, pack=pack, adapter_of=list(range(len(trials)))) + loop.answer(contexts[:1])
            times[decoder].append(time.perf_counter() - t0)
            answers[decoder] = got
            n = loop.questions
    res = {"questions": n, "seconds_per_question": {d: min(v) / n for d, v in times.items()},
           "runs_seconds": times, "identical_answers": answers["hf"] == answers["seal"],
           "differing_answers": sum(x != y for a_, b_ in zip(answers["hf"], answers["seal"]) for x, y in zip(a_, b_))}
    res["speedup"] = res["seconds_per_question"]["hf"] / res["seconds_per_question"]["seal"]
    print(f"answering {n} questions ({len(trials)} adapters + the base), fp32: generate "
          f"{1000 * res['seconds_per_question']['hf']:.0f} ms/question, seal's loop "
          f"{1000 * res['seconds_per_question']['seal']:.0f} ms/question ({res['speedup']:.2f}x); "
          f"identical answers: {res['identical_answers']} ({res['differing_answers']} differ)")
    return res


def compare_dtypes(lm, domain, passages, model_name) -> dict:
    """The base model's answers to `passages`' questions in fp32 and in bf16 (seal's decode loop): seconds per
    question, accuracy under the domain's grader, and how many answers differ."""
    from seal.engine.inner import InnerLoop
    from seal.engine.generation import render_prompt
    from seal.engine.models import load_model
    from seal.domains.knowledge import KnowledgeDomain
    res = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages)}
    answers = {}
    for name in ("fp32", "bf16"):
        model = lm if name == "fp32" else load_model(model_name, dtype="bf16")
        dom = KnowledgeDomain("implications", render=lambda t, p="", m=model: render_prompt(m, t, p))
        loop = InnerLoop(model, dom, show_progress=False)
        t0 = time.perf_counter()
        evals = loop.base_evaluations(passages)
        res[name] = {"seconds_per_question": (time.perf_counter() - t0) / res["questions"],
                     "accuracy": sum(e.accuracy * len(p.questions) for e, p in zip(evals, passages)) / res["questions"]}
        answers[name] = [a for e in evals for a in e.answers]
        del model
    res["differing_answers"] = sum(x != y for x, y in zip(answers["fp32"], answers["bf16"]))
    print(f"base answers, {res['questions']} questions of {len(passages)} passages: fp32 "
          f"{1000 * res['fp32']['seconds_per_question']:.0f} ms/question, accuracy {res['fp32']['accuracy']:.3f}; "
          f"bf16 {1000 * res['bf16']['seconds_per_question']:.0f} ms/question, accuracy {res['bf16']['accuracy']:.3f}; "
          f"{res['differing_answers']} answers differ")
    return res


def compare_compile(lm, domain, trials, cfg, packs: int) -> dict:
    """`inner.compile`: the same pack run `packs` times eager, then `packs` times compiled (the first compiled
    run pays the compilation). Runs last: compiling changes the model's layers for the rest of the process."""
    from seal.engine.inner import InnerLoop
    res = {}
    for name, on in (("eager", False), ("compiled", True)):
        loop = InnerLoop(lm, domain, replace(cfg, compile=on), show_progress=False)
        res[name] = []
        for _ in range(packs):
            t0 = time.perf_counter()
            loop.run(trials)
            res[name].append(time.perf_counter() - t0)
    steady = min(res["compiled"][1:] or res["compiled"])
    res["compile_seconds"] = res["compiled"][0] - steady
    res["steady_speedup"] = min(res["eager"]) / steady
    res["break_even_packs"] = (res["compile_seconds"] / (min(res["eager"]) - steady)
                               if min(res["eager"]) > steady else None)
    print(f"torch.compile, {len(trials)} adapters x {cfg.epochs} epochs per pack: eager "
          + ", ".join(f"{x:.1f}" for x in res["eager"]) + " s; compiled " + ", ".join(f"{x:.1f}" for x in res["compiled"])
          + f" s; compile {res['compile_seconds']:.0f} s, steady {res['steady_speedup']:.2f}x"
          + (f", pays after {res['break_even_packs']:.0f} packs" if res["break_even_packs"] else ", never pays"))
    return res


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

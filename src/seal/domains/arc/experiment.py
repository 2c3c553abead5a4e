"""ARC experiments: `seal arc eval` (in-context / TTT with self-edits / Oracle TTT) and `seal arc train` (SEAL:
ReST-EM rounds, then the same evaluation with the trained generator).

The training reward is binary by default, as the paper: every self-edit that solved its task is kept. With
reward="cells" it is the share of correct cells of the best attempt, and per task the best-scoring self-edits
are kept, so a round still has something to learn from when no rollout solves a task outright.

Success rate = share of (task, self-edit) pairs whose adapted model solved the task (every test output among
two voted attempts), whatever the training reward; `tasks_solved` = share of tasks solved by at least one pair.
In-context and Oracle TTT have one pair per task. As in the knowledge experiments, everything is stored as it
finishes and a rerun of the same command resumes.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ...config import inner_preset
from ...outer import SFTConfig, finetune_and_merge
from ...runs import ensure_base_evals, open_store, trial_recorder, trial_seed, write_results
from ...stats import mean_ci95
from .constrained import self_edit_trie
from .domain import REWARDS, ArcDomain, ArcSettings, answer_tokens_for
from .selfedit import validate_config
from .serialize import Prompt
from .tasks import ArcTask, load_tasks

# A strong fixed configuration for Oracle TTT on the built-in tasks: basic augmentations (the geometric
# group), loss on the outputs, and a learning rate and epoch count that fit the step budget.
ORACLE = {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                              "use_chain_augmentations": False, "use_repeat_augmentations": False},
          "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-3, "num_train_epochs": 2}}

CONDITIONS = ("in-context", "self-edit", "oracle")
DECODINGS = ("constrained", "free")


@dataclass
class ArcOptions:
    tasks: str = "builtin:easy:12:0"          # eval tasks
    train_tasks: str = "builtin:easy:24:1"    # training tasks (arc train only)
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    k: int = 3                                # self-edits per eval task (paper: 5)
    train_k: int | None = None                # self-edits per training task (paper: 15); None: k
    rounds: int = 1                           # ReST-EM rounds (paper: 1)
    reward: str = "binary"                    # ReST-EM reward: binary (paper) or cells (graded, see above)
    oracle: dict = field(default_factory=lambda: json.loads(json.dumps(ORACLE)))
    temperature: float = 0.8                  # paper's self-edit sampling
    decoding: str = "constrained"             # constrained: only menu self-edits (see constrained.py); free: paper
    max_new_tokens: int = 128
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    preset: str = "arc-small"
    inner: dict = field(default_factory=dict)
    ttt: dict = field(default_factory=dict)   # overrides of ArcSettings
    sft: dict = field(default_factory=lambda: {"rank": 16, "alpha": 16.0, "lr": 5e-5, "epochs": 8, "batch_size": 5})
    seed: int = 0
    out: str = "runs/arc-eval"
    show_progress: bool = True


def _render(lm, prompt: Prompt) -> str:
    from ...generation import render_prompt
    if lm.has_chat_template:
        return render_prompt(lm, prompt.user, system=prompt.system)
    return prompt.text


def _setup(opts: ArcOptions, lm):
    tok = lm.tokenizer
    settings = ArcSettings(**opts.ttt)
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    return ArcDomain(lambda p: _render(lm, p), count, settings, eos_text=tok.eos_token or "", reward=opts.reward)


def _settings(opts: ArcOptions, cfg, kind: str) -> dict:
    d = dataclasses.asdict(opts)
    for k in ("out", "show_progress", "device", "inner", "preset"):
        d.pop(k)
    if kind == "arc-eval":
        for k in ("train_tasks", "rounds", "sft", "train_k", "reward"):
            d.pop(k)
    d["inner"] = dataclasses.asdict(cfg)
    for perf_only in ("adapters_per_pack", "micro_batch_tokens"):
        d["inner"].pop(perf_only)
    return json.loads(json.dumps(d))


def _check(opts: ArcOptions) -> None:
    unknown = [c for c in opts.conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown ARC condition(s) {unknown}; use {', '.join(CONDITIONS)}")
    if opts.decoding not in DECODINGS:
        raise ValueError(f"unknown self-edit decoding {opts.decoding!r}; use {' or '.join(DECODINGS)}")
    if opts.reward not in REWARDS:
        raise ValueError(f"unknown ARC reward {opts.reward!r}; use {' or '.join(REWARDS)}")
    if opts.k < 1 or opts.rounds < 1 or (opts.train_k is not None and opts.train_k < 1):
        raise ValueError("k, train_k and rounds must be >= 1")
    oracle = validate_config(opts.oracle)
    if isinstance(oracle, str):
        raise ValueError(f"the oracle configuration is not a valid self-edit: {oracle}")


def _sample(store, lm, domain: ArcDomain, round_: int, source: str, tasks: list[ArcTask], k: int,
            opts: ArcOptions) -> dict[str, list[str]]:
    """k self-edits per task from `lm`, stored as they are made (a rerun samples only what is missing)."""
    from ...generation import generate
    stored = store.self_edits(round_, source)
    todo = [(t, s) for t in tasks for s in range(k) if (t.id, s) not in stored]
    chunk = 16
    allowed, max_new = None, opts.max_new_tokens
    if opts.decoding == "constrained" and todo:
        trie = self_edit_trie(lm.tokenizer)
        allowed, max_new = trie.allowed, max(max_new, trie.depth)   # never cut a menu self-edit short
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        prompts = [domain.self_edit_prompt(t) for t, _ in part]
        texts = generate(lm, prompts, max_new_tokens=max_new, temperature=opts.temperature,
                         batch_size=chunk, allowed_tokens=allowed,
                         seed=trial_seed(opts.seed, "gen", round_, source, part[0][0].id, part[0][1]))
        store.add_self_edits(round_, source, [(t.id, s, p, x) for (t, s), p, x in zip(part, prompts, texts)])
    stored = store.self_edits(round_, source)
    return {t.id: [stored[(t.id, s)] for s in range(k)] for t in tasks}


def _self_edit_trials(store, lm, domain, loop, round_: int, condition: str, tasks, k, opts) -> list:
    from ...inner import Trial
    edits = _sample(store, lm, domain, round_, condition, tasks, k, opts)
    done = store.done_trials(round_)
    return [Trial((round_, condition, t.id, s, 0), t, domain.parse_self_edit(t, edits[t.id][s]),
                  trial_seed(opts.seed, condition, round_, t.id, s), self_edit=edits[t.id][s])
            for t in tasks for s in range(k) if (round_, condition, t.id, s, 0) not in done]


def _evaluate(store, lm, domain, loop, tasks, opts, round_: int, label: str, conditions) -> None:
    """The eval conditions on `tasks` with the model as it is now (round_ = how many rounds trained it)."""
    from ...inner import Trial
    trials = []
    if "in-context" in conditions:
        ensure_base_evals(store, loop, f"round-{round_}", tasks)
    if "self-edit" in conditions:
        trials += _self_edit_trials(store, lm, domain, loop, round_, label, tasks, opts.k, opts)
    if "oracle" in conditions and round_ == 0:
        cfg = validate_config(opts.oracle)
        done = store.done_trials(0)
        trials += [Trial((0, "oracle", t.id, 0, 0), t, domain.config_update(t, cfg), trial_seed(opts.seed, "oracle", t.id),
                         self_edit=json.dumps(opts.oracle)) for t in tasks if (0, "oracle", t.id, 0, 0) not in done]
    loop.run(trials, on_result=trial_recorder(store, trials))


def run_arc(opts: ArcOptions, train: bool = False, log=print) -> dict:
    from ...inner import InnerLoop
    from ...models import load_model

    _check(opts)
    tasks = load_tasks(opts.tasks)
    train_tasks = load_tasks(opts.train_tasks) if train else []
    if not tasks:
        raise ValueError(f"{opts.tasks}: no tasks")
    if train and {t.id for t in tasks} & {t.id for t in train_tasks}:
        raise ValueError("the training and eval task sets overlap")
    cfg = inner_preset(opts.preset, **opts.inner)
    sft_cfg = SFTConfig(**opts.sft)
    kind = "arc-train" if train else "arc-eval"
    out = Path(opts.out)
    store = open_store(out, _settings(opts, cfg, kind), kind)

    start = 0
    ckpt = None
    for r in range(opts.rounds, 0, -1):
        path = store.get_meta(f"checkpoint:{r}") if train else None
        if path and (out / path / "config.json").exists():
            start, ckpt = r, str(out / path)
            break
    lm = load_model(ckpt or opts.model, opts.device, opts.dtype)
    domain = _setup(opts, lm)
    # An answer longer than the token limit could not be part of a training example either; the cap keeps one
    # huge grid (30 x 30 is about 2,700 tokens) from making every row of a CPU batch decode that long.
    answer_tokens = min(answer_tokens_for(tasks + train_tasks), domain.s.max_tokens)
    loop = InnerLoop(lm, domain, cfg, answer_tokens=answer_tokens, answer_batch=16,
                     show_progress=opts.show_progress)

    if start == 0:
        _evaluate(store, lm, domain, loop, tasks, opts, 0, "self-edit", opts.conditions)
    if train:
        for r in range(start + 1, opts.rounds + 1):
            trials = _self_edit_trials(store, lm, domain, loop, r, "train", train_tasks, opts.train_k or opts.k, opts)
            loop.run(trials, on_result=trial_recorder(store, trials))
            rows = store.trials(r, "train")
            winners = select_self_edits(rows, opts.reward)
            by_id = {t.id: t for t in train_tasks}
            pairs = [(domain.self_edit_prompt(by_id[w["context_id"]]), w["self_edit"]) for w in winners]
            store.set_meta(f"selected:{r}", [{"context_id": w["context_id"], "sample": w["sample"],
                                              "reward": w["reward"]} for w in winners])
            solved = sum(row["accuracy"] > 0 for row in rows)
            log(f"round {r}: {solved} of {len(rows)} self-edits solved their task, {len(pairs)} kept; "
                "finetuning the generator")
            rel = Path("checkpoints") / f"round-{r}"
            res = finetune_and_merge(lm, pairs, sft_cfg, seed=trial_seed(opts.seed, "sft", r), out_dir=out / rel)
            store.set_meta(f"sft:{r}", {"steps": res.steps, "final_loss": res.final_loss, "examples": res.examples})
            store.set_meta(f"checkpoint:{r}", str(rel / "merged"))
        # The trained generator writes self-edits for the eval tasks and is the model they update (as the paper).
        _evaluate(store, lm, domain, loop, tasks, opts, opts.rounds, f"seal-round-{opts.rounds}", ["self-edit"])

    results = summarize_arc(store, tasks, opts, train)
    store.set_meta("arc", results)
    store.close()
    return write_results(out, kind, _settings(opts, cfg, kind), conditions=results)


def select_self_edits(rows: list[dict], reward: str = "binary") -> list[dict]:
    """The training self-edits ReST-EM clones, from one round's stored trial rows.

    binary (the paper's ARC rule): every self-edit that solved its task. cells: per task, the self-edits with the
    task's highest reward, if above 0 (ties are all kept, so two rollouts that both solve it both count)."""
    scored = [row for row in rows if row["status"] == "ok"]
    if reward == "binary":
        return [row for row in scored if row["accuracy"] > 0]
    best: dict[str, float] = {}
    for row in scored:
        best[row["context_id"]] = max(best.get(row["context_id"], 0.0), row["reward"])
    return [row for row in scored if best[row["context_id"]] > 0 and row["reward"] == best[row["context_id"]]]


def summarize_arc(store, tasks: list[ArcTask], opts: ArcOptions, train: bool) -> dict:
    ids = {t.id for t in tasks}
    out = {}

    def row(pairs: list[tuple[str, float]]) -> dict:
        """pairs: (task id, 1.0 if solved else 0.0)."""
        rewards = [r for _, r in pairs]
        rate, ci = mean_ci95(rewards)
        solved_tasks = {c for c, r in pairs if r > 0}
        return {"success_rate": rate, "ci95": ci, "n_pairs": len(pairs),
                "tasks_solved": len(solved_tasks) / max(1, len(ids)), "n_tasks": len(ids)}

    if "in-context" in opts.conditions:
        base = store.base_evals("round-0")
        out["in-context"] = row([(c, v["accuracy"]) for c, v in base.items() if c in ids])
    labels = [("self-edit", 0, "TTT + self-edits (untrained)")]
    if train:
        labels.append((f"seal-round-{opts.rounds}", opts.rounds, f"SEAL (round {opts.rounds})"))
    if "self-edit" in opts.conditions:
        for cond, r, name in labels:
            trials = [t for t in store.trials(r, cond) if t["context_id"] in ids]
            if trials:
                out[name] = {**row([(t["context_id"], t["accuracy"]) for t in trials]),
                             "invalid_self_edits": sum(t["status"] == "invalid" for t in trials) / len(trials)}
    if "oracle" in opts.conditions:
        trials = [t for t in store.trials(0, "oracle") if t["context_id"] in ids]
        if trials:
            out["Oracle TTT"] = row([(t["context_id"], t["accuracy"]) for t in trials])
    return out


def format_arc_table(results: dict) -> str:
    lines = ["| condition | success rate | 95% CI | pairs | tasks solved (any pair) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {100 * r['success_rate']:.1f}% | [{100 * r['ci95'][0]:.1f}, "
                     f"{100 * r['ci95'][1]:.1f}] | {r['n_pairs']} | {100 * r['tasks_solved']:.0f}% of {r['n_tasks']} |")
    return "\n".join(lines)

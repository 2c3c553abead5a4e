"""The inner loop: self-edits -> adapters trained together -> answers in one batched generation -> rewards.

`InnerLoop.run` takes any number of trials (self-edits of one or many contexts), trains them in packs of
`adapters_per_pack` adapters over the frozen base, answers every trial's questions in one batched generation
with each row routed to its adapter, grades them, and reports each result as soon as its pack is done. With
`adapters_per_pack=1` it is the plain one-at-a-time loop. The base model's answers are computed once per
context (`base_evaluations`) and never per trial.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from torch.profiler import record_function
from tqdm.auto import tqdm

from .lora import AdapterPack
from .training import TrainJob, tokenize_update, train_pack
from .config import InnerConfig
from .protocol import Evaluation, Trial, TrialResult, Update  # noqa: F401 (Trial is part of this API)
from .generation import generate
from .models import LoadedModel


OVERRIDES = ("lr", "epochs", "batch_size")


def override_problem(overrides: dict) -> str | None:
    """Why an update's own hyperparameters cannot be trained with, or None. Domains bound them (the ARC schema);
    this is the engine's own check, so that no update trains with a NaN, zero or negative learning rate, or with
    zero epochs (which would score the untouched base as if it were the update)."""
    for key, value in overrides.items():
        if key not in OVERRIDES:
            return f"unknown training override {key!r}; updates may set {', '.join(OVERRIDES)}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "lr":
            ok = number and 0 < _as_float(value) < math.inf          # NaN fails both comparisons
        else:
            ok = number and (isinstance(value, int) or value.is_integer()) and value >= 1
        if not ok:
            return (f"invalid training override {key}: lr must be a finite number > 0, epochs and batch_size "
                    "whole numbers >= 1")
    return None


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:      # an int too large for a float
        return math.inf


class InnerLoop:
    def __init__(self, lm: LoadedModel, domain, cfg: InnerConfig | None = None, show_progress: bool = True):
        self.lm = lm
        self.domain = domain
        self.cfg = cfg or InnerConfig()
        self.show_progress = show_progress
        # Wall seconds spent in each phase (train, adapter-answers, base-answers), summed over calls, and the
        # questions answered: benchmarks read them to give each phase its own rate.
        self.timings: dict[str, float] = {}
        self.questions = 0

    def answer(self, contexts: Sequence[Any], pack=None, adapter_of: Sequence[int] | None = None,
               desc: str = "answering") -> list[list[str]]:
        """Answers to every context's questions, in one batched generation; context c uses adapter
        adapter_of[c] of `pack` (or the base)."""
        prompts, rows, owners = [], [], []
        for c, ctx in enumerate(contexts):
            ps = self.domain.eval_prompts(ctx)
            prompts += ps
            owners += [c] * len(ps)
            rows += [adapter_of[c] if adapter_of is not None else -1] * len(ps)
        self.questions += len(prompts)
        with tqdm(total=len(prompts), desc=desc, unit="q", disable=not self.show_progress, leave=False) as bar:
            texts = generate(self.lm, prompts, max_new_tokens=self.domain.answer_tokens,
                             batch_size=self.domain.answer_batch,
                             pack=pack, adapter_index=rows if pack is not None else None,
                             stop_at_newline=self.domain.stop_at_newline, progress=bar.update,
                             decoder=self.cfg.decoder)
        out: list[list[str]] = [[] for _ in contexts]
        for owner, text in zip(owners, texts):
            out[owner].append(text)
        return out

    @contextmanager
    def _phase(self, name: str):
        """Time a phase into `timings` and label it for `python benchmarks/inner_loop.py --profile`."""
        t0 = time.perf_counter()
        with record_function(f"seal:{name}"):
            yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def base_evaluations(self, contexts: Sequence[Any]) -> list[Evaluation]:
        with self._phase("base-answers"):
            answers = self.answer(contexts, desc="base answers")
        return [self.domain.grade(ctx, a) for ctx, a in zip(contexts, answers)]

    def run(self, trials: Sequence[Trial], bases: dict | None = None,
            on_result: Callable[[TrialResult], None] | None = None, keep_adapters: bool = False) -> list[TrialResult]:
        """Run every trial. `bases` maps a context id to its base Evaluation, for rewards that compare with
        the base model (optional)."""
        results, packs = self.packs(trials)
        if on_result:
            for r in results:
                on_result(r)
        with tqdm(total=sum(map(len, packs)), desc="trials", unit="trial", disable=not self.show_progress) as bar:
            for pack in packs:
                for r in self.run_pack(pack, bases or {}, keep_adapters):
                    results.append(r)
                    if on_result:
                        on_result(r)
                    bar.update(1)
        return results

    def packs(self, trials: Sequence[Trial]) -> tuple[list[TrialResult], list[list[Trial]]]:
        """The results of trials that cannot train (an invalid update or override), and the others in packs of
        `adapters_per_pack`, in order. Every executor forms packs with this one function, so what runs together
        never depends on where it runs."""
        invalid, valid = [], []
        for t in trials:
            problem = t.update.error or override_problem(t.update.overrides)
            if problem:
                invalid.append(TrialResult(t.key, None, 0.0, error=problem))
            else:
                valid.append(t)
        size = self.cfg.adapters_per_pack
        return invalid, [valid[i:i + size] for i in range(0, len(valid), size)]

    def _compile(self) -> None:
        """torch.compile every decoder layer in place, once per model (`inner.compile`). The compiled layers
        outlive adapter packs: the LoRA terms are excluded from compilation (`torch.compiler.disable`), so a
        new pack's routing does not recompile them."""
        model = self.lm.model
        if getattr(model, "_seal_compiled", False):
            return
        layers = getattr(model.base_model, "layers", None)
        if layers is None:
            raise ValueError(f"inner.compile: {type(model).__name__} has no decoder layers at base_model.layers")
        for layer in layers:
            layer.compile(dynamic=True)
        model._seal_compiled = True

    def run_pack(self, trials: list[Trial], bases: dict, keep_adapters: bool = False) -> list[TrialResult]:
        cfg, tok = self.cfg, self.lm.tokenizer
        if cfg.compile:
            self._compile()
        t0 = time.perf_counter()
        jobs = []
        for t in trials:
            ids, masks = tokenize_update(tok, t.update, cfg.max_seq_len)
            ov = t.update.overrides
            jobs.append(TrainJob(ids, masks, lr=float(ov.get("lr", cfg.lr)), epochs=int(ov.get("epochs", cfg.epochs)),
                                 batch_size=int(ov.get("batch_size", cfg.batch_size)), seed=t.seed))
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with AdapterPack(self.lm.model, len(trials), cfg.rank, cfg.alpha, cfg.dropout, cfg.target_modules,
                         seeds=[t.seed for t in trials]) as pack:
            with tqdm(desc=f"training {len(trials)} adapter(s)", unit="step",
                      disable=not self.show_progress, leave=False) as bar:
                def progress(done, total):
                    bar.total = total  # train_pack knows the step count; no need to plan the batches twice
                    bar.update(done - bar.n)
                with self._phase("train"):
                    outcomes = train_pack(pack, jobs, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                                          weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                                          micro_batch_tokens=cfg.micro_batch_tokens, pad_id=pad,
                                          progress=progress, packed=cfg.packed)
            ok = [i for i, o in enumerate(outcomes) if o.failed is None]
            with self._phase("adapter-answers"):
                answers = self.answer([trials[i].context for i in ok], pack=pack, adapter_of=ok,
                                      desc="adapter answers") if ok else []
            adapters = {i: pack.adapter_state(i) for i in ok} if keep_adapters else {}
        seconds = (time.perf_counter() - t0) / len(trials)  # the pack's time, shared equally
        results = []
        answer_of = dict(zip(ok, answers))
        for i, (t, o) in enumerate(zip(trials, outcomes)):
            if o.failed is not None:
                results.append(TrialResult(t.key, None, 0.0, error=f"training diverged: {o.failed}", steps=o.steps,
                                           final_loss=o.final_loss, seconds=seconds))
                continue
            ev = self.domain.grade(t.context, answer_of[i])
            reward = self.domain.reward(ev, bases.get(t.context.id))
            results.append(TrialResult(t.key, ev, reward, steps=o.steps, final_loss=o.final_loss, seconds=seconds,
                                       losses=list(o.losses or []), adapter=adapters.get(i)))
        return results

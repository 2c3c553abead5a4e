"""Configs as data: one nested config per recipe, from a YAML file plus dotted overrides.

A recipe's config is a set of sections (run, model, domain, inner, generation, eval, outer, finetune, seeds, ...),
each a dataclass. It is assembled in layers, later ones winning:

    dataclass defaults < the inner preset < the recipe's defaults < --config FILE < shorthand flags < --set KEY=VALUE

OmegaConf reads the YAML file and the dotted `--set` list and merges the layers (it is what Hydra and torchtune
use for exactly this, and it keeps YAML's types); pydantic then validates each section against its dataclass, so
an error names the key, the value and where it came from. The resolved config is stored in the run folder
(config.yaml), and `--config RUN/config.yaml` reproduces the run.

Fields whose metadata says `affects_results: False` (output folder, progress bars, pack sizes) are left out of
the settings a resumed run must match; everything else decides results.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..engine.config import PRESETS, SPEED_ONLY, FinetuneConfig, InnerConfig, speed_only


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key, the value and its source."""


# --------------------------------------------------------------------------------------------- the sections

@dataclass
class RunSection:
    out: str = speed_only("runs/run")
    seed: int = 0                         # self-edit sampling, adapter initialisation, data order
    show_progress: bool = speed_only(True)
    log_to: list[str] = field(default_factory=lambda: ["jsonl"], metadata=SPEED_ONLY)   # jsonl, tensorboard


@dataclass
class ModelSection:
    name: Optional[str] = None            # a hub id or folder, or a .gguf file; None: the built-in model
    dtype: Optional[str] = None           # auto, bf16, fp16, fp32
    device: Optional[str] = speed_only(None)

    def __post_init__(self):
        """Checked here, not when the model loads: by then the run folder records the setting (a bad dtype would
        refuse the corrected command there), and torch's error on a bad device is no input error."""
        if self.dtype not in (None, "auto") or self.device is not None:
            import torch
            from ..engine.models import pick_device, pick_dtype
            if self.dtype not in (None, "auto"):
                pick_dtype(torch.device("cpu"), self.dtype)     # ValueError naming the known ones
            try:
                pick_device(self.device)
            except RuntimeError:
                raise ValueError(f"unknown device {self.device!r}; use e.g. auto, cpu, cuda, cuda:1 or mps") from None


@dataclass
class InnerSection(InnerConfig):
    """The inner-loop update (engine.config.InnerConfig) and the preset its defaults come from."""
    preset: str = "small"

    def engine(self) -> InnerConfig:
        names = {f.name for f in dataclasses.fields(InnerConfig)}
        return InnerConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


@dataclass
class GenerationSection:
    """How self-edits are sampled."""
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.95
    decoding: str = "free"                # free, or constrained (only the domain's valid self-edits)
    endpoint_url: Optional[str] = None    # OpenAI-compatible base URL for endpoint:MODEL conditions
    endpoint_key_env: str = speed_only("OPENAI_API_KEY")

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.decoding not in ("free", "constrained"):
            raise ValueError(f"decoding must be free or constrained, got {self.decoding!r}")
        if not 0 <= self.temperature <= 10 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be in [0, 10] and top_p in (0, 1]")


@dataclass
class EvalSection:
    conditions: list[str] = field(default_factory=lambda: ["base", "passage", "self-edit"])
    k: int = 1                            # self-edits per context and condition
    repeats: int = 1                      # inner-loop runs per self-edit, each with its own seed

    def __post_init__(self):
        if self.k < 1 or self.repeats < 1:
            raise ValueError(f"k and repeats must be >= 1 (a count of self-edits and of seeds), got k={self.k}, "
                             f"repeats={self.repeats}")
        if not self.conditions:
            raise ValueError("no conditions given")


@dataclass
class OuterSection:
    """ReST-EM: rounds of sample -> score -> select -> finetune the generator -> merge."""
    rounds: int = 2
    contexts_per_round: Optional[int] = 50     # training contexts per round; None: all of them
    reuse_contexts: bool = False               # every round on the same contexts (else disjoint slices)
    k: int = 5                                 # self-edits sampled per training context
    repeats: int = 3                           # inner-loop seeds per self-edit; reward = mean over them
    selection: str = "best"                    # a rule of experiment.restem.SELECTION_RULES
    eval_rounds: str = "all"                   # evaluate after every round, only first and last, or none
    student: Optional[str] = None              # a separate model the inner loop updates (teacher/student)
    train_base: bool = True                    # also score the writing model on training contexts, no update
    first_eval_condition: str = "eval"         # the store's name for the round-0 self-edit evaluation
    eval_condition: str = "eval"               # ... and for later rounds ({round} is filled in)

    def __post_init__(self):
        if self.rounds < 1 or self.k < 1 or self.repeats < 1 or (self.contexts_per_round or 1) < 1:
            raise ValueError("rounds, contexts_per_round, k and repeats must all be >= 1")
        if self.eval_rounds not in ("all", "last", "none"):
            raise ValueError(f"eval_rounds must be all, last or none, got {self.eval_rounds!r}")


@dataclass
class SeedSection:
    """Which named parts each seed is derived from (engine.seeds.seed_of). These decide results: two runs with
    the same templates and run seed draw the same numbers."""
    sample: list[str] = field(default_factory=lambda: ["gen", "{context}", "{sample}"])
    trial: list[str] = field(default_factory=lambda: ["{condition}", "{context}", "{sample}", "{repeat}"])
    baseline: list[str] = field(default_factory=lambda: ["{condition}", "{context}", "{sample}", "{repeat}"])
    train_trial: list[str] = field(default_factory=lambda: ["{condition}", "{round}", "{context}", "{sample}",
                                                           "{repeat}"])
    finetune: list[str] = field(default_factory=lambda: ["sft", "{round}"])


@dataclass
class ExecutorSection:
    """Where the trials run: in this process (local), or on the actors of a Ray cluster, each holding a replica of
    the model that is updated. Only speed depends on it: the driver forms and seeds the packs and alone writes the
    store, so the stored results are the same with any executor and any number of workers."""
    kind: str = speed_only("local")                 # local, or ray
    ray_address: Optional[str] = speed_only(None)   # auto, host:port, ray://host:port; None: RAY_ADDRESS or a new
    #                                                 cluster on this machine
    workers: int = speed_only(1)                    # Ray actors, each with its own model replica
    cpus_per_worker: float = speed_only(1.0)
    gpus_per_worker: float = speed_only(0.0)
    threads: Optional[int] = speed_only(None)       # torch threads per worker; None: its CPUs (at least 1)
    retries: int = speed_only(3)                    # attempts per pack before the run stops (a worker that dies)

    def __post_init__(self):
        if self.kind not in ("local", "ray"):
            raise ValueError(f"kind must be local or ray, got {self.kind!r}")
        if self.workers < 1 or self.retries < 1 or (self.threads is not None and self.threads < 1):
            raise ValueError("workers, retries and threads must be >= 1")
        if not (self.cpus_per_worker > 0 and self.gpus_per_worker >= 0):
            raise ValueError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")
        if self.kind == "ray":
            import importlib.util
            if importlib.util.find_spec("ray") is None:
                raise ValueError("executor ray needs Ray, which is not installed: pip install 'seal-lm[ray]'")


SECTION_TYPES: dict[str, type] = {"run": RunSection, "model": ModelSection, "inner": InnerSection,
                                  "generation": GenerationSection, "eval": EvalSection, "outer": OuterSection,
                                  "finetune": FinetuneConfig, "seeds": SeedSection,
                                  "executor": ExecutorSection}


# --------------------------------------------------------------------------------------------- flags

@dataclass
class Flag:
    """A shorthand command-line option for one config key. The default shown in --help is the recipe's."""
    name: str                             # --name on the command line
    key: str                              # dotted config key
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    const: Any = None                     # a switch that sets this value (no argument)
    implies: dict[Any, dict[str, Any]] = field(default_factory=dict)   # value -> other keys it sets


def comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def targets(text: str) -> list[str]:
    return ["all-linear"] if text == "all-linear" else comma_list(text)


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at character {e.pos})") from None


COMMON_FLAGS = [
    Flag("out", "run.out", "run folder (store.sqlite, config.yaml, results.json, metrics.jsonl)"),
    Flag("seed", "run.seed", "run seed: self-edit sampling, adapter initialisation, data order", int),
    Flag("no-progress", "run.show_progress", "no progress bars", const=False),
    Flag("log-to", "run.log_to", "metric sinks, comma-separated: jsonl (always), tensorboard", comma_list),
    Flag("model", "model.name", "Hugging Face id or folder, or a .gguf file (default: built-in SmolLM2-135M-Instruct)"),
    Flag("device", "model.device", "cuda, cpu, ... (default: cuda if available)"),
    Flag("dtype", "model.dtype", "auto, bf16, fp16 or fp32 (default: auto)"),
    Flag("preset", "inner.preset", "inner-loop preset: " + ", ".join(PRESETS), choices=tuple(PRESETS)),
    Flag("rank", "inner.rank", "LoRA rank", int),
    Flag("alpha", "inner.alpha", "LoRA alpha", float),
    Flag("dropout", "inner.dropout", "LoRA dropout", float),
    Flag("targets", "inner.target_modules", "comma-separated module names, or all-linear", targets),
    Flag("lr", "inner.lr", "inner-loop learning rate", float),
    Flag("epochs", "inner.epochs", "inner-loop epochs", int),
    Flag("batch-size", "inner.batch_size", "inner-loop batch size", int),
    Flag("schedule", "inner.schedule", "learning-rate schedule", choices=("linear", "cosine", "constant")),
    Flag("adapters-per-pack", "inner.adapters_per_pack", "adapters trained together in one pass (1: one at a time)",
         int),
    Flag("executor", "executor.kind", "where trials run: this process, or the actors of a Ray cluster",
         choices=("local", "ray")),
    Flag("ray-address", "executor.ray_address", "the Ray cluster: auto (the one running here), host:port or "
         "ray://host:port (default: $RAY_ADDRESS, else a new cluster on this machine)"),
    Flag("workers", "executor.workers", "Ray actors, each holding a replica of the model", int),
    Flag("worker-cpus", "executor.cpus_per_worker", "CPUs per Ray worker", float),
    Flag("worker-gpus", "executor.gpus_per_worker", "GPUs per Ray worker (e.g. 1, or 0.5 for two per GPU)", float),
    Flag("threads", "executor.threads", "torch threads per Ray worker (default: its CPUs)", int),
]

FINETUNE_FLAGS = [Flag(f"sft-{name.replace('_', '-')}", f"finetune.{name}", f"generator finetune {name}", typ)
                  for name, typ in (("rank", int), ("alpha", float), ("lr", float), ("epochs", int),
                                    ("batch_size", int))]


# --------------------------------------------------------------------------------------------- assembling

def _omegaconf():
    from omegaconf import OmegaConf
    return OmegaConf


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def _has_dotted(d: dict, key: str) -> bool:
    for p in key.split("."):
        if not isinstance(d, dict) or p not in d:
            return False
        d = d[p]
    return True


def _merge(*layers: dict) -> dict:
    """Deep merge; later layers win; lists are replaced, not appended."""
    out: dict = {}
    for layer in layers:
        for k, v in layer.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _merge(out[k], v)
            else:
                out[k] = json.loads(json.dumps(v)) if isinstance(v, (dict, list)) else v
    return out


def read_file(path: str | Path) -> dict:
    OmegaConf = _omegaconf()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = OmegaConf.to_container(OmegaConf.load(p), resolve=True)
    except Exception as e:  # a YAML syntax error, or an interpolation that does not resolve
        raise ConfigError(f"{path}: not a readable YAML config ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def read_overrides(items: list[str]) -> dict:
    OmegaConf = _omegaconf()
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set inner.lr=2e-3")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)), resolve=True)
    except Exception as e:
        raise ConfigError(f"--set: cannot read {items} ({str(e).splitlines()[0]})") from None


@dataclass
class Recipe:
    """What a recipe's config holds: its sections and the defaults it sets on them."""
    name: str                             # e.g. "knowledge eval": the store checks a folder holds this recipe
    sections: dict[str, type]
    defaults: dict = field(default_factory=dict)


@dataclass
class Config:
    """A resolved config: typed sections, the plain data they came from, and the recipe's name."""
    recipe: str
    data: dict
    sections: dict[str, Any]
    # How a run folder written before configs (its store's settings version 1) is matched: a function from that
    # run's stored command line to the settings it means today, or None when it cannot be told (set by the CLI).
    legacy: Optional[Callable[[str], Optional[dict]]] = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    def settings(self) -> dict:
        """What decides results: a rerun in the same folder must match it to resume."""
        parts = {name: _results_part(sec) for name, sec in self.sections.items()}
        # A section of speed settings alone (the executor) decides nothing: left out, so that folders written
        # before it existed resume.
        return {"recipe": self.recipe, **{name: part for name, part in parts.items() if part != {}}}

    def to_yaml(self) -> str:
        OmegaConf = _omegaconf()
        return OmegaConf.to_yaml(OmegaConf.create({"recipe": self.recipe, **self.data}))


def _results_part(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _results_part(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("affects_results", True)}
    if isinstance(obj, (list, tuple)):
        return [_results_part(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _results_part(v) for k, v in obj.items()}
    return obj


def _check_keys(data: dict, recipe: Recipe, where: Callable[[str], str]) -> None:
    for name, value in data.items():
        if name == "recipe":
            continue
        if name not in recipe.sections:
            hint = difflib.get_close_matches(str(name), recipe.sections, n=1)
            raise ConfigError(f"{where(name)}: unknown section {name!r} for `seal {recipe.name}`"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; sections: {', '.join(recipe.sections)}")
        cls = recipe.sections[name]
        if not isinstance(value, dict):
            raise ConfigError(f"{where(name)}: section {name!r} must be a mapping of keys, got {value!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in value:
            if key not in fields:
                hint = difflib.get_close_matches(str(key), fields, n=1)
                raise ConfigError(f"{where(f'{name}.{key}')}: unknown key {name}.{key}"
                                  + (f" (did you mean {name}.{hint[0]}?)" if hint else ""))


def _validate(cls: type, data: dict, name: str, where: Callable[[str], str]) -> Any:
    from pydantic import TypeAdapter, ValidationError
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        key = f"{name}.{loc}" if loc else name
        shown = get_dotted(data, loc) if loc else None
        msg = err["msg"].removeprefix("Value error, ")
        value = f" = {shown!r}" if shown is not None else ""
        raise ConfigError(f"{where(key)}: {key}{value}: {msg}") from None


def get_dotted(d: Any, key: str) -> Any:
    """The value at a dotted key of nested dicts (and lists), or None."""
    for p in key.split("."):
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and p.isdigit() and int(p) < len(d):
            d = d[int(p)]
        else:
            return None
    return d


def resolve(recipe: Recipe, file: str | Path | None = None, flags: dict[str, Any] | None = None,
            overrides: list[str] | None = None) -> Config:
    """The recipe's config from its defaults, a YAML file, shorthand flags (dotted key -> value) and --set items."""
    file_layer = read_file(file) if file else {}
    if file and file_layer.get("recipe") not in (None, recipe.name):
        raise ConfigError(f"{file}: a config for `seal {file_layer['recipe']}`, not `seal {recipe.name}`")
    flag_layer: dict = {}
    for key, value in (flags or {}).items():
        _set_dotted(flag_layer, key, value)
    set_layer = read_overrides(overrides or [])

    def where(key: str) -> str:
        """Where a key's value came from, for the error message (a list item: where its list came from)."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            for label, layer in ((f"--set {key}", set_layer), ("command line", flag_layer), (str(file), file_layer)):
                if _has_dotted(layer, ".".join(parts[:n])):
                    return label
        return f"the defaults of `seal {recipe.name}`"

    for label, layer in ((str(file), file_layer), ("command line", flag_layer), ("--set", set_layer)):
        _check_keys(layer, recipe, lambda k, label=label: label if label != "--set" else f"--set {k}")
    user = _merge(file_layer, flag_layer, set_layer)
    user.pop("recipe", None)
    layers = [recipe.defaults, user]
    if "inner" in recipe.sections:
        preset = get_dotted(_merge(recipe.defaults, user), "inner.preset") or "small"
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(f"{where('inner.preset')}: inner.preset = {preset!r}: unknown preset; "
                              f"choose from {', '.join(PRESETS)}")
        layers = [{"inner": {**PRESETS[preset], "preset": preset}}, *layers]
    merged = _merge(*layers)
    run_sec = merged.get("run", {})
    if isinstance(run_sec.get("out"), str) and "{seed}" in run_sec["out"]:   # e.g. the demo's runs/demo-seed{seed}
        run_sec["out"] = run_sec["out"].replace("{seed}", str(run_sec.get("seed", 0)))
    sections, data = {}, {}
    for name, cls in recipe.sections.items():
        sec = _validate(cls, merged.get(name, {}), name, where)
        sections[name] = sec
        data[name] = json.loads(json.dumps(dataclasses.asdict(sec)))
    return Config(recipe.name, data, sections)


def defaults_of(recipe: Recipe) -> dict:
    """The recipe's resolved defaults as plain data (for --help)."""
    return resolve(recipe).data

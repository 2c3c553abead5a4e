"""Configs as data: every run quoted in the README and docs has a config file in configs/ that resolves to the
same settings as its command line; errors name the key and where it came from; a run folder's config.yaml
reproduces the run; speed-only fields never decide whether a run resumes."""
import subprocess
import sys

import pytest

from .doc_commands import ROOT, quoted_runs
from seal.cli import _parse
from seal.experiment.config import ConfigError, resolve

RUNS = quoted_runs()


def _from_argv(argv):
    """The config the command line would run, read by the CLI's own code."""
    a, spec, name, extra, flags = _parse(argv)
    return spec, name, resolve(spec.recipe_config(name, extra), a.config, flags, a.set)


def test_every_quoted_run_is_found():
    names = {r[0] for r in RUNS}
    assert {"demo-seed0", "train-builtin", "arc-train-cells", "builtin-30"} <= names and len(RUNS) >= 12


@pytest.mark.parametrize("name,recipe,rest,where", RUNS, ids=[r[0] for r in RUNS])
def test_each_quoted_run_has_a_config_file_with_the_same_settings(name, recipe, rest, where):
    path = ROOT / "configs" / f"{name}.yaml"
    assert path.is_file(), f"{where} quotes a run with --out {name}; configs/{name}.yaml is missing"
    argv = [recipe, *rest] if recipe == "demo" else [*recipe.split(), *rest]
    _, _, from_flags = _from_argv(argv)
    domain, rname = from_flags.recipe.split()
    _, _, from_file = _from_argv([domain, rname, "--config", str(path)])
    assert from_file.settings() == from_flags.settings()
    assert from_file.run.out == from_flags.run.out


def test_errors_name_the_key_the_value_and_the_file(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("inner:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"run.yaml: inner.lr = 'fast': Input should be a valid number"):
        _from_argv(["knowledge", "eval", "--config", str(bad)])
    bad.write_text("inner:\n  rnak: 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key inner.rnak \(did you mean inner.rank\?\)"):
        _from_argv(["knowledge", "eval", "--config", str(bad)])
    with pytest.raises(ConfigError, match=r"--set eval: eval: k and repeats must be >= 1"):
        _from_argv(["knowledge", "eval", "--set", "eval.k=0"])
    with pytest.raises(ConfigError, match="a config for `seal arc train`, not `seal knowledge eval`"):
        _from_argv(["knowledge", "eval", "--config", str(ROOT / "configs" / "arc-train-cells.yaml")])
    r = subprocess.run([sys.executable, "-m", "seal", "knowledge", "eval", "--set", "outer.rounds=2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown section 'outer'" in r.stderr and "Traceback" not in r.stderr


def test_layers_override_in_order_and_speed_knobs_do_not_decide_results(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  lr: 0.002\n  epochs: 3\n")
    _, _, cfg = _from_argv(["knowledge", "eval", "--config", str(f), "--lr", "3e-3", "--set", "inner.epochs=5",
                            "--preset", "paper"])
    assert (cfg.inner.lr, cfg.inner.epochs, list(cfg.inner.target_modules)) == (3e-3, 5, ["q_proj", "v_proj"])
    _, _, fast = _from_argv(["knowledge", "eval", "--adapters-per-pack", "1", "--no-progress", "--out", "x"])
    _, _, slow = _from_argv(["knowledge", "eval"])
    assert fast.settings() == slow.settings()
    _, _, other = _from_argv(["knowledge", "eval", "--epochs", "3"])
    assert other.settings() != slow.settings()


def test_ci_runs_the_readme_test_command_verbatim():
    import re
    readme = (ROOT / "README.md").read_text()
    quick = re.search(r"(?ims)^#+\s*quick ?start.*?(?=^#+\s)", readme).group(0)
    test_block = re.findall(r"```[a-z]*\n(.*?)```", quick, re.S)[1].strip()
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [test_block]


def test_knowledge_train_sets_its_eval_apart_from_its_outer_loop():
    """`seal knowledge train`: --k and --repeats are the outer loop's (the paper's numbers); the evaluation before
    and after the rounds has its own --conditions, --eval-k and --eval-repeats, which the same --set keys reach."""
    _, _, cfg = _from_argv(["knowledge", "train", "--k", "4", "--repeats", "2", "--conditions", "base,self-edit",
                            "--eval-k", "3", "--eval-repeats", "5"])
    assert (cfg.outer.k, cfg.outer.repeats) == (4, 2)
    assert (cfg.eval.conditions, cfg.eval.k, cfg.eval.repeats) == (["base", "self-edit"], 3, 5)
    _, _, by_set = _from_argv(["knowledge", "train", "--k", "4", "--repeats", "2", "--set",
                               "eval.conditions=[base,self-edit]", "--set", "eval.k=3", "--set", "eval.repeats=5"])
    assert by_set.settings() == cfg.settings()

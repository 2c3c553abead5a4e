"""The `seal` command. Thin: its subcommands come from the domain registry (seal DOMAIN RECIPE, and shortcuts
such as `seal demo`); each turns --config, --set and shorthand flags into the recipe's config and runs it."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from . import __version__


def _add_recipe_args(p: argparse.ArgumentParser, spec, recipe, defaults: dict) -> None:
    from .experiment.config import COMMON_FLAGS, get_dotted
    p.add_argument("--config", metavar="FILE", help="a YAML config (e.g. a run folder's config.yaml); flags and "
                                                    "--set override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set inner.lr=2e-3 (repeatable)")
    groups = {}
    seen = set()
    for flag in [*spec.flags, *recipe.flags, *COMMON_FLAGS]:
        if flag.name in seen or flag.key.split(".")[0] not in {"domain", *recipe.sections, *recipe.own_sections}:
            continue
        seen.add(flag.name)
        section = flag.key.split(".")[0]
        g = groups.get(section) or groups.setdefault(section, p.add_argument_group(f"{section} (config key prefix "
                                                                                    f"{section}.)"))
        default = get_dotted(defaults, flag.key)
        shown = json.dumps(default) if not isinstance(default, str) else default
        helptext = f"{flag.help} [{flag.key}; default: {shown}]".replace("%", "%%")
        if flag.const is not None:
            g.add_argument(f"--{flag.name}", dest=flag.key, action="store_const", const=flag.const,
                           default=argparse.SUPPRESS, help=helptext)
        else:
            g.add_argument(f"--{flag.name}", dest=flag.key, type=flag.type, choices=flag.choices,
                           default=argparse.SUPPRESS, help=helptext, metavar=None if flag.choices else flag.name.upper()
                           .replace("-", "_"))
    p.set_defaults(_flags={f.key: f for f in [*spec.flags, *recipe.flags, *COMMON_FLAGS]})


def build_parser() -> argparse.ArgumentParser:
    from .domains.registry import domains
    from .experiment.config import ConfigError, defaults_of

    parser = argparse.ArgumentParser(prog="seal", description="Self-adapting language models (SEAL).")
    parser.add_argument("--version", action="version", version=f"seal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    registry = domains()
    for spec in registry.values():
        for short, (recipe_name, extra, helptext) in spec.shortcuts.items():
            p = sub.add_parser(short, help=helptext, description=helptext)
            rc = spec.recipe_config(recipe_name, extra)
            _add_recipe_args(p, spec, spec.recipes[recipe_name], defaults_of(rc))
            p.set_defaults(_run=(spec, recipe_name, extra))
    for spec in registry.values():
        dp = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        dsub = dp.add_subparsers(dest="recipe", required=True)
        for name, recipe in spec.recipes.items():
            p = dsub.add_parser(name, help=recipe.help, description=recipe.help)
            try:
                defaults = defaults_of(spec.recipe_config(name))
            except ConfigError as e:  # a plugin whose defaults do not validate: say so, keep the command usable
                defaults = {}
                p.description = f"{recipe.help} (warning: its defaults do not validate: {e})"
            _add_recipe_args(p, spec, recipe, defaults)
            p.set_defaults(_run=(spec, name, {}))
    rep = sub.add_parser("report", help="Markdown + HTML report (tables, plots) of a run folder, finished or not")
    rep.add_argument("run_dir")
    return parser


def _parse(argv: list[str], a=None):
    """(parsed arguments, DomainSpec, recipe name, extra defaults, flags) of a command line, as `main` reads it."""
    a = a if a is not None else build_parser().parse_args(argv)
    spec, recipe_name, extra = a._run
    recipe = spec.recipes[recipe_name]
    flags: dict = {}
    for key, value in vars(a).items():
        if key in a._flags:
            flags[key] = value
            flags.update({k: v for k, v in (a._flags[key].implies.get(value, {}) if isinstance(value, str) else {})
                          .items() if k not in flags and k.split(".")[0] in {*recipe.sections, *recipe.own_sections}})
    return a, spec, recipe_name, extra, flags


def legacy_settings(command: str) -> dict | None:
    """The settings that a run folder's stored command line (seal before configs) means today, or None when it
    cannot be read. `seal arc train` without --train-k sampled --k self-edits per training task then."""
    import contextlib
    import io
    from .experiment.config import ConfigError, resolve
    try:
        argv = shlex.split(command)[1:]
        if argv[:2] == ["arc", "train"] and "--train-k" not in argv and "--k" in argv:
            argv += ["--train-k", argv[argv.index("--k") + 1]]
        with contextlib.redirect_stderr(io.StringIO()):
            a, spec, name, extra, flags = _parse(argv)
        return resolve(spec.recipe_config(name, extra), None, flags, []).settings()
    except (SystemExit, ValueError, ConfigError, IndexError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .logging_setup import quiet_libraries
    quiet_libraries()
    a = build_parser().parse_args(argv)
    if a.command == "report":
        from .api import report_main
        return report_main([a.run_dir])
    from .domains.knowledge.data import DataError
    from .domains.knowledge.graders import JudgeError
    from .engine.store import StoreError
    from .experiment.config import ConfigError, resolve
    from .experiment.run import RunError

    a, spec, recipe_name, extra, flags = _parse(argv, a)
    recipe = spec.recipes[recipe_name]
    command = "seal " + shlex.join(argv)
    try:
        cfg = resolve(spec.recipe_config(recipe_name, extra), a.config, flags, a.set)
        cfg.legacy = legacy_settings
        print(f"seal: {spec.name} {recipe_name} -> {cfg.run.out}", file=sys.stderr)
        payload = recipe.run(spec, cfg, command, lambda m: print(m, file=sys.stderr))
        if recipe.show:
            print(recipe.show(spec, payload))
        print(f"results: {cfg.run.out}/results.json")
        return 0
    except (ConfigError, RunError, StoreError, DataError, JudgeError, ValueError, FileNotFoundError) as e:
        print(f"seal: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

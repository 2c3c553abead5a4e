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


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr, exit 2, as every other input error (the subcommands' parsers are of
    this class too), instead of argparse's usage block."""

    def error(self, message: str):
        self.exit(2, f"seal: error: {message.replace(chr(10), ' ')} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .domains.registry import domains
    from .experiment.config import ConfigError, defaults_of

    parser = _Parser(prog="seal", description="Self-adapting language models (SEAL).")
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
    """`seal ...`: exit 0 on success, 2 on a usage or input error (one line), 130 when interrupted, 1 on an
    unexpected error: one line naming a log file that holds the traceback (never a traceback on the terminal)."""
    argv = sys.argv[1:] if argv is None else argv
    where: dict = {}
    interrupted, restore = _note_sigint()
    try:
        return _main(argv, where)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as e:  # noqa: BLE001 - the last line of defence: a bug, not an input mistake
        if interrupted:     # Ctrl-C landed inside a library that turned the KeyboardInterrupt into its own error
            return _interrupted()
        log = _write_crash_log(argv, where.get("out"))
        first = (str(e).splitlines() or [""])[0][:300]
        print(f"seal: internal error ({type(e).__name__}: {redact(first)}); the traceback is in {log}. Finished "
              f"work is stored: the same command resumes.", file=sys.stderr)
        return 1
    finally:
        restore()


def _interrupted() -> int:
    print("seal: interrupted; every finished trial is stored, and the same command resumes", file=sys.stderr)
    return 130


def _note_sigint():
    """(a list that gets an entry when SIGINT arrives, a function that puts the old handler back). Python's own
    handler (raise KeyboardInterrupt) still runs; but a library can turn that KeyboardInterrupt into an error of
    its own (OmegaConf did, in CI, when Ctrl-C landed inside OmegaConf.create), and the list still says Ctrl-C."""
    import signal
    seen: list = []
    old = signal.getsignal(signal.SIGINT)
    if old is not signal.default_int_handler:      # ignored (a background job) or someone else's handler: leave it
        return seen, lambda: None

    def handler(signum, frame):
        seen.append(signum)
        signal.default_int_handler(signum, frame)
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:                             # not the main thread: signals are not ours to take
        return seen, lambda: None
    return seen, lambda: signal.signal(signal.SIGINT, old)


def redact(text: str) -> str:
    """`text` with the value of every API-key variable the settings name (and the usual ones) replaced by ***."""
    from .engine.openai_client import redact as redact_keys
    return redact_keys(text, {"OPENAI_API_KEY", *_KEY_ENVS})


_KEY_ENVS: set[str] = set()   # the key variables of the command being run (its config's *_key_env fields)


def _write_crash_log(argv: list[str], out: str | None) -> str:
    """The traceback of an unexpected error, in the run folder's logs/ when there is one, else in seal's cache."""
    import datetime
    import os
    import traceback
    from pathlib import Path
    text = redact(f"seal {shlex.join(argv)}\n{datetime.datetime.now().isoformat()}\n\n{traceback.format_exc()}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    from .engine.models import cache_dir
    for folder in ([Path(out) / "logs"] if out and Path(out).is_dir() else []) + [cache_dir() / "logs",
                                                                                  Path("/tmp") / "seal-logs"]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"error-{stamp}.log"
            path.write_text(text)
            return str(path)
        except OSError:
            continue
    return "(no folder could be written: the traceback follows)\n" + text


def _main(argv: list[str], where: dict) -> int:
    from .logging_setup import quiet_libraries
    quiet_libraries()
    a = build_parser().parse_args(argv)
    if a.command == "report":
        from .api import report_main
        where["out"] = a.run_dir
        return report_main([a.run_dir])
    from .domains.knowledge.graders import JudgeError
    from .engine.generation import EndpointError
    from .experiment.config import resolve

    a, spec, recipe_name, extra, flags = _parse(argv, a)
    recipe = spec.recipes[recipe_name]
    command = "seal " + shlex.join(argv)
    try:
        cfg = resolve(spec.recipe_config(recipe_name, extra), a.config, flags, a.set)
        cfg.legacy = legacy_settings
        where["out"] = cfg.run.out
        _KEY_ENVS.update(v for sec in cfg.sections.values() for k, v in vars(sec).items()
                         if k.endswith("key_env") and isinstance(v, str))
        print(f"seal: {spec.name} {recipe_name} -> {cfg.run.out}", file=sys.stderr)
        payload = recipe.run(spec, cfg, command, lambda m: print(m, file=sys.stderr))
        if recipe.show:
            print(recipe.show(spec, payload))
        print(f"results: {cfg.run.out}/results.json")
        return 0
    # Every input error is a ValueError (ConfigError, RunError, StoreError, DataError, ModelError, ...); an
    # unusable judge or endpoint is a RuntimeError of its own; a named file that is missing is an input error too.
    except (ValueError, JudgeError, EndpointError, FileNotFoundError) as e:
        print(f"seal: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only run folder, a file that vanished: the system's own words
        print(f"seal: error: {redact(str(e))} (finished work is stored: free the space or fix the folder, then "
              f"run the same command to resume)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The Python entry point: run any registered recipe from config data, as the command line does.

    import seal
    payload = seal.run("knowledge eval", {"domain.n": 6, "run.out": "runs/api"})
    payload = seal.run("arc train", config="configs/arc-train-cells.yaml", overrides=["outer.rounds=2"])
    seal.api.write_report("runs/api")

This is where the layers meet: the registry of domains (and their report sections) is handed to the recipes and
the report here and in the CLI, so nothing below the domains imports them.
"""
from __future__ import annotations

from typing import Any


def run(recipe: str, flags: dict[str, Any] | None = None, config: str | None = None,
        overrides: list[str] | None = None, log=print) -> dict:
    """Run `recipe` ("DOMAIN RECIPE", e.g. "knowledge eval"); `flags` maps dotted config keys to values."""
    spec, cfg = resolve_config(recipe, flags, config, overrides)
    return spec.recipes[recipe.split()[1]].run(spec, cfg, "", log)


def resolve_config(recipe: str, flags: dict[str, Any] | None = None, config: str | None = None,
                   overrides: list[str] | None = None, extra_defaults: dict | None = None):
    """(DomainSpec, resolved Config) of a recipe, without running it."""
    from .domains.registry import domains
    from .experiment.config import ConfigError, resolve
    try:
        domain, name = recipe.split()
        spec = domains()[domain]
        spec.recipes[name]
    except (ValueError, KeyError):
        raise ConfigError(f"unknown recipe {recipe!r}; known: " + ", ".join(
            f"{d} {r}" for d, s in domains().items() for r in s.recipes)) from None
    return spec, resolve(spec.recipe_config(name, extra_defaults), config, flags, overrides)


def write_report(run_dir, sections: dict | None = None) -> dict:
    """RUN_DIR/report.md and report.html, with every registered domain's report sections."""
    from .domains.registry import report_sections
    from .report import write_report as write
    return write(run_dir, report_sections() if sections is None else sections)


def report_main(argv: list[str] | None = None) -> int:
    """`seal report RUN_DIR`."""
    from .domains.registry import report_sections
    from .report import main
    return main(argv, report_sections())


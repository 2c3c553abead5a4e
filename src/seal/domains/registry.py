"""Domains by name. Each is a `DomainSpec` (experiment.recipes) registered through the entry-point group
`seal.domains`, as pytest and many command-line tools find their plugins: a package (or a test) that declares
`[project.entry-points."seal.domains"] toy = "toy_pkg:SPEC"` reaches the real `seal` command with no change to
seal. The built-in domains are registered the same way in seal's own pyproject.toml, and found directly if the
installed metadata is older than the code.
"""
from __future__ import annotations

import sys
from importlib import import_module
from importlib.metadata import entry_points

GROUP = "seal.domains"
BUILTIN = {"knowledge": "seal.domains.knowledge.spec:SPEC", "arc": "seal.domains.arc.spec:SPEC"}


def _load(target: str):
    module, _, attr = target.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj() if callable(obj) and not hasattr(obj, "recipes") else obj


def domains() -> dict:
    """name -> DomainSpec. A plugin that fails to load is named on stderr and left out; the others still work."""
    found: dict = {}
    for ep in entry_points(group=GROUP):
        try:
            spec = _load(ep.value)
        except Exception as e:  # a broken plugin must not break the seal command
            print(f"seal: warning: the domain plugin {ep.name!r} ({ep.value}) does not load: {e}", file=sys.stderr)
            continue
        found.setdefault(spec.name, spec)
    for name, target in BUILTIN.items():
        if name not in found:
            found[name] = _load(target)
    return dict(sorted(found.items(), key=lambda kv: (kv[0] not in BUILTIN, kv[0])))


def report_sections() -> dict:
    """Run kind -> report section, from every registered domain."""
    out = {}
    for spec in domains().values():
        sections = spec.report() if callable(spec.report) else spec.report
        out.update(sections or {})
    return out

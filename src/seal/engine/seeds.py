"""Seeds derived from what a unit of work is, never from the order work is done in.

Every random choice of a run (a chunk of sampled self-edits, an adapter's initialisation and data order, the
generator's finetune) takes its seed from the run seed and a few named parts, so a resumed run, a run with
another pack size or a run on more workers draws the same numbers. Which parts name a seed is data: a recipe's
config holds one template per kind of work (e.g. ["{condition}", "{context}", "{sample}", "{repeat}"]), and
`seed_of` fills it in.
"""
from __future__ import annotations

import json
import re
import zlib
from typing import Any, Sequence

_FIELD = re.compile(r"^\{(\w+)\}$")


def trial_seed(run_seed: int, *parts) -> int:
    return zlib.crc32(json.dumps([run_seed, *parts]).encode()) & 0x7FFFFFFF


def fill(template: Sequence[str], **values: Any) -> list:
    """The template's parts with {name} filled in. A part that is exactly one field keeps the value's type (an
    int stays an int, so the seed does not change with how a number is written); other parts are formatted."""
    out = []
    for part in template:
        m = _FIELD.match(part)
        try:
            out.append(values[m.group(1)] if m else part.format(**values))
        except KeyError as e:
            raise ValueError(f"seed template {list(template)}: unknown field {e.args[0]!r}; "
                             f"known: {', '.join(sorted(values))}") from None
    return out


def seed_of(run_seed: int, template: Sequence[str], **values: Any) -> int:
    return trial_seed(run_seed, *fill(template, **values))

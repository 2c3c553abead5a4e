"""The `seal` runs quoted in README.md and docs/: each command line (backslash continuations joined), the
recipe it runs and the config file in configs/ that must resolve to the same settings."""
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RECIPES = {"demo": ("knowledge eval", "demo")}


def quoted_runs() -> list[tuple[str, str, list[str], str]]:
    """(config name, recipe, argv after the recipe, where it is quoted) for every runnable command."""
    out, seen = [], set()
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for block in re.findall(r"```(?:bash)?\n(.*?)```", text, re.S):
            lines, pending = [], ""
            for line in block.splitlines():   # a quoted argument may span lines (JSON): join until it closes
                pending = f"{pending} {line.strip()}" if pending else line.strip()
                try:
                    shlex.split(pending, comments=True)
                except ValueError:
                    continue
                lines.append(pending)
                pending = ""
            for line in lines:
                if not line.startswith("seal ") or re.search(r"<\w+>|\bE\b|\bLR\b|/tmp/|\$\w+", line):
                    continue
                argv = shlex.split(line, comments=True)[1:]
                if argv[0] in ("report",) or "--help" in argv or "--config" in argv:   # not a run of its own
                    continue
                recipe, rest = (RECIPES[argv[0]][0], argv[1:]) if argv[0] in RECIPES else (" ".join(argv[:2]), argv[2:])
                out_dir = rest[rest.index("--out") + 1] if "--out" in rest else None
                seed = rest[rest.index("--seed") + 1] if "--seed" in rest else "0"
                name = Path(out_dir).name if out_dir else (f"demo-seed{seed}" if argv[0] == "demo" else None)
                if name is None or name in seen:
                    continue
                seen.add(name)
                out.append((name, argv[0] if argv[0] in RECIPES else recipe, rest, doc.name))
    return out

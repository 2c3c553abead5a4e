"""Bad input (issue 13): every file a user can pass, and the command line, fail with one clear error.

Kinds: knowledge data, ARC tasks (a file; a folder), prompt templates, self-edit files (knowledge and ARC), the ARC
oracle configuration, config files, and command-line arguments. For each kind the tests run once per way of
breaking a valid document (parametrized, so every way runs every time), and hypothesis draws the document and
the details: a field dropped, a wrong type, null, an empty string or list, extra nesting, huge or negative
numbers, NaN, non-UTF-8 bytes, truncated JSON, a wrong top-level type, duplicate ids, ragged grids, colours
outside 0-9, empty or oversized grids, ... The loader the CLI uses is called in-process and must raise one of the
project's ValueError types (never a TypeError, KeyError, RecursionError, ... nor a bare UnicodeDecodeError) whose
message is one line naming the file and, for a problem inside a record, the record and the field. Command lines
go through `seal.cli.main` in-process (exit 2, one `seal: error:` line, no traceback, no run store), and a few
real `python -m seal` runs close the file.

SEAL_BAD_INPUT_COUNTS=PATH adds the number of generated inputs checked per kind to the JSON object in PATH.
"""
import copy
import dataclasses
import functools
import json
import os
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seal.cli import main
from seal.domains.arc.spec import ORACLE
from seal.domains.arc.tasks import load_tasks
from seal.domains.knowledge.data import parse_records, resolve_data
from seal.domains.knowledge.prompts import FAMILIES, get_family
from seal.domains.registry import domains
from seal.experiment.config import resolve
from seal.experiment.evaluate import parse_conditions

COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    target = os.environ.get("SEAL_BAD_INPUT_COUNTS")
    if target and COUNTS:
        path = Path(target)
        merged = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
        for kind, n in COUNTS.items():
            merged[kind] = merged.get(kind, 0) + n
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def examples(n):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fresh_dir(tmp_path) -> Path:
    """A folder of its own for one generated example (tmp_path is shared by all examples of a test)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def expect_error(call, *fragments, allowed=(ValueError,)):
    """`call()` must raise a project error (a ValueError, not a bare decode error) with a one-line message
    containing every fragment; returns the message."""
    try:
        call()
    except allowed as e:
        assert not isinstance(e, (UnicodeError, json.JSONDecodeError)), f"a bare {type(e).__name__}: {e}"
        msg = str(e)
    except Exception as e:  # noqa: BLE001 - what the test is about
        pytest.fail(f"{type(e).__name__} instead of a clear error: {e!r}"[:2000])
    else:
        pytest.fail(f"accepted; expected an error naming {fragments}")
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def write(path: Path, content: str | bytes) -> Path:
    """bytes as they are, str as UTF-8 text."""
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


class _QuotedStrings(yaml.SafeDumper):
    """Every string quoted: OmegaConf reads a plain 1e-3 as a number, so a string must not look like one."""


_QuotedStrings.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="'"))


def to_yaml(data) -> str:
    return yaml.dump(data, Dumper=_QuotedStrings, allow_unicode=True, sort_keys=False)


def write_json(path: Path, value) -> Path:
    """Any JSON value, a string included, as a JSON document (NaN as JSON's NaN extension, a lone surrogate as
    its escape); bytes: an already broken document, as they are."""
    return write(path, value if isinstance(value, bytes) else json.dumps(value))


# ----------------------------------------------------------------------------------------- shared pieces

TEXT = st.text(string.ascii_letters + string.digits + " ", min_size=1, max_size=12)   # no YAML/OmegaConf syntax
WORD = st.text(string.ascii_lowercase, min_size=1, max_size=10).filter(lambda w: w not in ("null", "true", "false",
                                                                                           "yes", "no", "on", "off"))
BIG = st.integers(min_value=-10**30, max_value=10**30)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
NON_STRINGS = st.one_of(st.none(), st.booleans(), BIG, FLOATS, st.lists(TEXT, max_size=3),
                        st.dictionaries(TEXT, TEXT, max_size=2))
NON_LISTS = st.one_of(st.none(), st.booleans(), BIG, FLOATS, TEXT, st.dictionaries(TEXT, TEXT, max_size=2))
NON_OBJECTS = st.one_of(st.none(), st.booleans(), BIG, FLOATS, TEXT, st.lists(BIG, max_size=3))
BLANK = st.sampled_from(["", " ", "\n\t ", "\u3000", "\xa0\n"])
BAD_BYTES = st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
FILE_MUTATIONS = ["truncated", "non-utf8", "utf16", "bom", "deep", "huge-int", "empty-file"]


@st.composite
def broken_json_bytes(draw, doc, how=None):
    """The JSON text of a valid `doc`, broken as a file: truncated, non-UTF-8, UTF-16, a BOM, nested past the
    parser's depth, an integer too long to convert, empty."""
    text = json.dumps(doc)
    how = how or draw(st.sampled_from(FILE_MUTATIONS))
    if how == "truncated":
        out = text[:draw(st.integers(0, len(text) - 1))].encode()
    elif how == "non-utf8":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        out = raw[:at] + draw(BAD_BYTES) + raw[at:]
    elif how == "utf16":
        out = text.encode("utf-16")
    elif how == "bom":
        out = b"\xef\xbb\xbf" + text.encode()
    elif how == "deep":
        n = draw(st.integers(2_000, 200_000))
        out = ("[" * n + text + "]" * n).encode()
    elif how == "huge-int":
        digits = "9" * draw(st.integers(4_301, 50_000))
        at = text.rfind("]") if "]" in text else len(text) - 1   # inside the last list, or the last object
        out = (text[:at] + ("," if text[at - 1] not in "[{" else "") + digits + text[at:]).encode()
    else:
        out = draw(st.sampled_from([b"", b"   \n"]))
    try:  # must be unreadable as JSON (a prefix can be a complete value: then it is not a broken file)
        json.loads(out.decode("utf-8"))
        assume(False)
    except (ValueError, RecursionError):
        pass
    return out


# ----------------------------------------------------------------------------------------- knowledge data

BUILTIN_RECORDS = json.loads(resources.files("seal.data").joinpath("fictional_eval.json").read_text("utf-8"))


@st.composite
def passage_records(draw, completions=False):
    idx = draw(st.lists(st.integers(0, len(BUILTIN_RECORDS) - 1), min_size=1, max_size=3, unique=True))
    records = [copy.deepcopy(BUILTIN_RECORDS[i]) for i in idx]
    if completions:
        for r in records:
            r["completions"] = draw(st.lists(TEXT, min_size=1, max_size=2))
    return records


RECORD_MUTATIONS = ["drop-field", "non-string-field", "blank-context", "bad-questions", "bad-question-item",
                    "bad-question-field", "bad-completions", "non-object-record", "nested-record", "duplicate",
                    "lone-surrogate"]
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
KNOWLEDGE_MUTATIONS = RECORD_MUTATIONS + FILE_MUTATIONS + ["top-level"]


@st.composite
def broken_record(draw, records, how):
    """One record of `records` broken in place; returns the fragments the error must name."""
    i = draw(st.integers(0, len(records) - 1))
    rec = records[i]
    if how == "drop-field":
        name = draw(st.sampled_from(["title", "context", "questions"]))
        del rec[name]
    elif how == "non-string-field":
        name = draw(st.sampled_from(["title", "context"]))
        rec[name] = draw(NON_STRINGS)
    elif how == "blank-context":
        name, rec["context"] = "context", draw(BLANK)
    elif how == "bad-questions":
        name, rec["questions"] = "questions", draw(st.one_of(NON_LISTS, st.just([])))
    elif how == "bad-question-item":
        j = draw(st.integers(0, len(rec["questions"]) - 1))
        name, rec["questions"][j] = f"questions[{j}]", draw(NON_OBJECTS)
    elif how == "bad-question-field":
        j = draw(st.integers(0, len(rec["questions"]) - 1))
        key = draw(st.sampled_from(["question", "answer"]))
        name = f"questions[{j}].{key}"
        change = draw(st.sampled_from(["drop", "type", "blank"]))
        if change == "drop":
            del rec["questions"][j][key]
        else:
            rec["questions"][j][key] = draw(NON_STRINGS if change == "type" else BLANK)
    elif how == "bad-completions":
        good = draw(st.lists(TEXT, max_size=2))
        bad = draw(st.one_of(st.none(), BIG, FLOATS, st.dictionaries(TEXT, TEXT, max_size=2),
                             st.lists(NON_STRINGS.filter(lambda x: not isinstance(x, str)), min_size=1,
                                      max_size=2).map(lambda xs: good + xs)))
        name, rec["completions"] = "completions", bad
    elif how in ("non-object-record", "nested-record"):
        name, records[i] = "(record)", draw(NON_OBJECTS) if how == "non-object-record" else [rec]
    elif how == "lone-surrogate":   # written as a JSON escape, read back as a str no encoder accepts
        j = draw(st.integers(0, len(rec["questions"]) - 1))
        name = draw(st.sampled_from(["title", "context", f"questions[{j}].question", f"questions[{j}].answer"]))
        holder, key = (rec, name) if "." not in name else (rec["questions"][j], name.split(".")[1])
        at = draw(st.integers(0, len(holder[key])))
        holder[key] = holder[key][:at] + draw(SURROGATES) + holder[key][at:]
    else:  # the same passage again (whitespace around it does not make it another one)
        dup = copy.deepcopy(rec)
        dup["title"] = draw(st.sampled_from(["", " ", "\n"])) + dup["title"]
        records.insert(draw(st.integers(i + 1, len(records))), dup)
        i, name = records.index(dup, i + 1), "context"
    return [f"record {i}", f"field '{name}'"]


@st.composite
def bad_knowledge_file(draw, how, records=None):
    """(content, fragments the error must name besides the path) of a malformed passages file."""
    records = draw(passage_records()) if records is None else records
    if how in RECORD_MUTATIONS:
        return records, draw(broken_record(records, how))
    if how in FILE_MUTATIONS:
        return draw(broken_json_bytes(records, how)), []
    return draw(st.one_of(NON_LISTS, st.just([]), st.just({"data": records}))), ["top level"]


@pytest.mark.parametrize("how", KNOWLEDGE_MUTATIONS)
@examples(10)
@given(data=st.data())
def test_knowledge_data_errors_name_file_record_and_field(tmp_path, how, data):
    content, fragments = data.draw(bad_knowledge_file(how))
    path = write_json(fresh_dir(tmp_path) / "passages.json", content)
    expect_error(lambda: resolve_data(str(path)), str(path), *fragments)
    COUNTS["knowledge data"] += 1


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_knowledge_data_path_that_is_not_a_file(tmp_path, what):
    path = tmp_path / "passages.json"
    if what == "folder":
        path.mkdir()
    expect_error(lambda: resolve_data(str(path)), str(path))
    COUNTS["knowledge data"] += 1


# ----------------------------------------------------------------------------------------- ARC tasks

COLOURS = st.integers(0, 9)
IDS = st.text("0123456789abcdef", min_size=8, max_size=8)
GRID_MUTATIONS = ["empty", "empty-row", "ragged", "colour", "cell-type", "too-tall", "too-wide", "not-a-list",
                  "nested", "flat"]
TASK_LEVELS = ["grid", "pair", "part", "task"]


@st.composite
def grids(draw):
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return [[draw(COLOURS) for _ in range(cols)] for _ in range(rows)]


@st.composite
def arc_tasks(draw):
    pair = st.fixed_dictionaries({"input": grids(), "output": grids()})
    return {"train": draw(st.lists(pair, min_size=1, max_size=3)), "test": draw(st.lists(pair, min_size=1, max_size=2))}


@st.composite
def bad_grid(draw, grid, part, field, how=None):
    how = how or draw(st.sampled_from(GRID_MUTATIONS))
    g = copy.deepcopy(grid)
    if how == "empty":
        return []
    if how == "empty-row":
        g[draw(st.integers(0, len(g) - 1))] = []
    elif how == "ragged":
        if len(g) == 1:
            g.append(g[0] + [0])
        else:
            r = draw(st.integers(1, len(g) - 1))
            g[r] = g[r] + [draw(COLOURS)] if draw(st.booleans()) or len(g[r]) == 1 else g[r][:-1]
    elif how in ("colour", "cell-type"):
        bad = (draw(st.one_of(st.integers(10, 10**30), st.integers(-10**30, -1))) if how == "colour" else
               draw(st.one_of(FLOATS, TEXT, st.none(), st.booleans(), st.lists(COLOURS, max_size=2))))
        r = draw(st.integers(0, len(g) - 1))
        g[r][draw(st.integers(0, len(g[r]) - 1))] = bad
    elif how == "too-tall":
        g = [[0] * len(g[0]) for _ in range(draw(st.integers(31, 60)))]
    elif how == "too-wide":
        g = [[0] * draw(st.integers(31, 60)) for _ in g]
    elif how == "not-a-list":
        # a test output of null only means "no known solution"; everywhere else null is an error
        return draw(st.one_of(BIG, TEXT, st.dictionaries(TEXT, COLOURS, max_size=2),
                              st.none() if (part, field) != ("test", "output") else BIG))
    elif how == "nested":
        return [g]
    else:
        return g[0]
    return g


@st.composite
def broken_task(draw, task, task_id, level=None, grid_how=None, whole_file=False):
    """`task` broken in place (or replaced: the return value); returns (task, fragments). `whole_file`: the task
    is all of its file, which is then no task (its id, the file's name, is not in the message)."""
    where = f"task {task_id}"
    level = level or draw(st.sampled_from(TASK_LEVELS))
    if level == "task":
        return draw(NON_OBJECTS), [] if whole_file else [where]
    part = draw(st.sampled_from(["train", "test"]))
    if level == "part":
        if draw(st.booleans()):
            del task[part]
        else:
            task[part] = draw(st.one_of(NON_LISTS, st.just([])))
        return task, [where, f"'{part}'"]
    i = draw(st.integers(0, len(task[part]) - 1))
    at = f"{where}, {part} pair {i}"
    if level == "pair":
        change = draw(st.sampled_from(["not-an-object", "no-input"] + (["no-output"] if part == "train" else [])))
        if change == "not-an-object":
            task[part][i] = draw(NON_OBJECTS)
        else:
            del task[part][i][change[3:]]
        return task, [at]
    field = draw(st.sampled_from(["input", "output"]))
    bad = task[part][i][field] = draw(bad_grid(task[part][i][field], part, field, grid_how))
    if bad is None and field == "output":   # null output: only allowed (no known solution) on a test pair
        return task, [at, "'output'"]
    return task, [f"{at}, {field}"]


@functools.lru_cache(maxsize=None)
def _arc_cfg():
    return resolve(domains()["arc"].recipe_config("eval"))


def arc_check(spec: str):
    """What `seal arc eval` does first: the ARC spec's input check on `domain.tasks`."""
    cfg = _arc_cfg()
    cfg.domain.tasks = spec
    return domains()["arc"].check(cfg)


ARC_FILE_CASES = ([("single", how) for how in ["file", "pair", "part", "task"]]
                  + [("challenges", how) for how in ["pair", "part", "task", "file", "top", "empty", "duplicate",
                                                      "surrogate-id"]]
                  + [("solutions", how) for how in ["count", "grid", "top"]])


@st.composite
def bad_arc_file(draw, folder, layout, how, grid_how=None):
    """Files for one malformed ARC task file in `folder`: one task (its id the file's name), a challenges file
    (id -> task), or a challenges file with its test outputs in the solutions file beside it. Returns (the spec
    to load, fragments)."""
    if layout == "single":
        task_id = draw(IDS)
        path = folder / f"{task_id}.json"
        task = draw(arc_tasks())
        if how == "file":
            write_json(path, draw(broken_json_bytes(task)))
            return str(path), [str(path)]
        task, fragments = draw(broken_task(task, task_id, how, grid_how, whole_file=True))
        write_json(path, task)
        return str(path), [str(path), *fragments]
    ids = draw(st.lists(IDS, min_size=1, max_size=3, unique=True))
    tasks = {i: draw(arc_tasks()) for i in ids}
    path = folder / ("tasks.json" if layout == "challenges" else "arc_challenges.json")
    victim = draw(st.sampled_from(ids))
    if layout == "challenges":
        if how in TASK_LEVELS:
            tasks[victim], fragments = draw(broken_task(tasks[victim], victim, how, grid_how))
            write_json(path, tasks)
            return str(path), [str(path), *fragments]
        if how == "file":
            write_json(path, draw(broken_json_bytes(tasks)))
        elif how == "top":
            write_json(path, draw(st.one_of(NON_OBJECTS.filter(lambda x: not isinstance(x, dict)),
                                            st.just(list(tasks.values())))))
        elif how == "empty":
            write_json(path, {})
        elif how == "surrogate-id":   # an id no store can hold
            bad_id = victim[:4] + draw(SURROGATES) + victim[4:]
            write_json(path, {bad_id if k == victim else k: v for k, v in tasks.items()})
            return str(path), [str(path), ascii(bad_id)]
        else:  # the same id twice: JSON parsers keep one of them without a word
            body = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in tasks.items()]
            body.insert(draw(st.integers(0, len(body))), f"{json.dumps(victim)}: {json.dumps(tasks[victim])}")
            write(path, "{" + ", ".join(body) + "}")
            return str(path), [str(path), victim]
        return str(path), [str(path)]
    solutions = {i: [p.pop("output") for p in t["test"]] for i, t in tasks.items()}
    sol_path = folder / "arc_solutions.json"
    if how == "count":
        sol = solutions[victim]
        solutions[victim] = draw(st.sampled_from([sol[:-1], sol + sol[:1]])) if draw(st.booleans()) else \
            draw(NON_LISTS.filter(lambda x: x is not None))
        fragments = [str(path), f"task {victim}"]
    elif how == "grid":
        i = draw(st.integers(0, len(solutions[victim]) - 1))
        solutions[victim][i] = draw(bad_grid(solutions[victim][i], "test", "output"))
        fragments = [str(path), f"task {victim}, test pair {i}, output"]
    else:
        solutions = draw(NON_OBJECTS.filter(lambda x: not isinstance(x, dict)))
        fragments = [str(sol_path)]
    write_json(path, tasks)
    write_json(sol_path, solutions)
    return str(path), fragments


@pytest.mark.parametrize("layout,how", ARC_FILE_CASES)
@examples(8)
@given(data=st.data())
def test_arc_task_file_errors_name_file_task_pair_and_field(tmp_path, layout, how, data):
    spec, fragments = data.draw(bad_arc_file(fresh_dir(tmp_path), layout, how))
    expect_error(lambda: arc_check(spec), *fragments)
    COUNTS["ARC tasks (file)"] += 1


@pytest.mark.parametrize("grid_how", GRID_MUTATIONS)
@examples(8)
@given(data=st.data())
def test_arc_bad_grids_name_file_task_pair_and_grid(tmp_path, grid_how, data):
    layout = data.draw(st.sampled_from(["single", "challenges"]))
    spec, fragments = data.draw(bad_arc_file(fresh_dir(tmp_path), layout, "grid", grid_how))
    expect_error(lambda: arc_check(spec), *fragments)
    COUNTS["ARC tasks (file)"] += 1


def test_arc_task_spec_that_is_nothing(tmp_path):
    path = tmp_path / "no-such-tasks.json"
    expect_error(lambda: arc_check(str(path)), str(path))
    COUNTS["ARC tasks (file)"] += 1


FOLDER_MUTATIONS = ["task", "file", "challenges-layout", "no-task-files", "sub-folder", "non-utf8-name"]


@st.composite
def bad_arc_folder(draw, folder, how):
    """A folder of task files (one per task, named by its id) with one broken; returns fragments."""
    ids = draw(st.lists(IDS, min_size=1, max_size=3, unique=True))
    tasks = {i: draw(arc_tasks()) for i in ids}
    victim = draw(st.sampled_from(ids))
    if how == "no-task-files":   # an empty folder, or tasks under other names (only *.json are task files)
        for i in ids:
            write_json(folder / f"{i}{draw(st.sampled_from(['.JSON', '.txt', '.json.bak', '']))}", tasks[i])
        if draw(st.booleans()):
            for p in folder.iterdir():
                p.unlink()
        return [str(folder)]
    bad_path = folder / f"{victim}.json"
    if how == "non-utf8-name":   # its id, the file's name, is no text
        bad_path = folder / os.fsdecode(draw(BAD_BYTES) + f"{victim}.json".encode())
    fragments = [str(bad_path)]
    if how == "task":
        tasks[victim], more = draw(broken_task(tasks[victim], victim))
        fragments += more
    for i in ids:
        if i != victim or how == "task":
            write_json(folder / f"{i}.json", tasks[i])
    if how == "non-utf8-name":
        write_json(bad_path, tasks[victim])
        fragments.append("not valid Unicode")
    if how == "file":
        write_json(bad_path, draw(broken_json_bytes(tasks[victim])))
    elif how == "challenges-layout":   # an id -> task object where one task is expected
        write_json(bad_path, {victim: tasks[victim]})
        fragments += [f"task {victim}", "'train'"]
    elif how == "sub-folder":
        bad_path.mkdir()
    return fragments


@pytest.mark.parametrize("how", FOLDER_MUTATIONS)
@examples(10)
@given(data=st.data())
def test_arc_task_folder_errors_name_the_file(tmp_path, how, data):
    folder = fresh_dir(tmp_path)
    fragments = data.draw(bad_arc_folder(folder, how))
    expect_error(lambda: arc_check(str(folder)), *fragments)
    COUNTS["ARC tasks (folder)"] += 1


# ----------------------------------------------------------------------------------------- prompt templates

def template_is_valid(raw: bytes) -> bool:
    """Independent of the loader: UTF-8, and the body (without a last `### label:` line) fills in with a title
    and a passage, showing the passage."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = text.rstrip("\n").split("\n")
    if lines and lines[-1].startswith("### label:"):
        text = "\n".join(lines[:-1]) + "\n"
    try:
        return "PASSAGESENTINEL" in text.format(title="Some title", context="PASSAGESENTINEL")
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        return False


TEMPLATE_MUTATIONS = ["no-context", "unknown-placeholder", "lone-brace", "format-spec", "non-utf8", "utf16", "empty"]


@st.composite
def bad_template(draw, how):
    family = draw(st.sampled_from(sorted(FAMILIES)))
    text = FAMILIES[family].instruction
    if draw(st.booleans()):
        text += "### label: " + FAMILIES[family].label.replace("\n", "\\n")
    at = draw(st.integers(0, len(text)))
    if how == "no-context":
        text = text.replace("{context}", draw(st.sampled_from(["", "context", "{{context}}", "{title}"])))
    elif how == "unknown-placeholder":
        name = draw(st.sampled_from(["", "0", "1", "passage", "Context", "context.upper", "title[0]", " context",
                                     "context ", "self"]) | st.from_regex(r"[a-z_]{1,10}", fullmatch=True))
        text = text[:at] + "{" + name + "}" + text[at:]
    elif how == "lone-brace":
        text = text[:at] + draw(st.sampled_from(["{", "}", "{context", "context}"])) + text[at:]
    elif how == "format-spec":
        spec = draw(st.sampled_from(["{context:d}", "{context!x}", "{context:{title}}", "{title:,}", "{context:=10}",
                                     "{context!}", "{context:%}", "{title:{nope}}"]))
        text = text.replace("{context}", spec, 1) if draw(st.booleans()) else text[:at] + spec + text[at:]
    elif how == "empty":
        text = draw(st.sampled_from(["", "\n", "   ", "### label: Answer:"]))
    raw = text.encode("utf-16") if how == "utf16" else text.encode()
    if how == "non-utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(BAD_BYTES) + raw[at:]
    assume(not template_is_valid(raw))
    return raw


@pytest.mark.parametrize("how", TEMPLATE_MUTATIONS)
@examples(12)
@given(data=st.data())
def test_prompt_template_errors_name_the_file(tmp_path, how, data):
    path = write(fresh_dir(tmp_path) / "template.txt", data.draw(bad_template(how)))
    expect_error(lambda: get_family(f"file:{path}"), str(path))
    COUNTS["prompt template"] += 1


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_prompt_template_path_that_is_not_a_file(tmp_path, what):
    path = tmp_path / "template.txt"
    if what == "folder":
        path.mkdir()
    # a missing template is a FileNotFoundError naming it (the CLI reports it as an input error)
    expect_error(lambda: get_family(f"file:{path}"), str(path), allowed=(ValueError, FileNotFoundError))
    COUNTS["prompt template"] += 1


# ----------------------------------------------------------------------------------------- self-edit files

@functools.lru_cache(maxsize=None)
def _knowledge_domain():
    spec = domains()["knowledge"]
    return spec.build(resolve(spec.recipe_config("eval")), None, {})


KNOWLEDGE_SELF_EDIT_MUTATIONS = KNOWLEDGE_MUTATIONS + ["missing-passage", "edited-passage"]


@st.composite
def bad_knowledge_self_edits(draw, how):
    """(file content, selected passages, fragments): a SEAL-format file with `completions` for the selected
    passages (and maybe others), broken."""
    records = draw(passage_records(completions=True))
    chosen = draw(st.lists(st.integers(0, len(records) - 1), min_size=1, unique=True))
    contexts = parse_records([copy.deepcopy(records[i]) for i in chosen], "selected passages")
    if how in KNOWLEDGE_MUTATIONS:
        content, fragments = draw(bad_knowledge_file(how, records))
        return content, contexts, fragments
    k = draw(st.sampled_from(chosen))
    missing = contexts[chosen.index(k)]
    if how == "missing-passage":
        del records[k]
        if not records:
            return records, contexts, ["top level"]
    else:
        field = draw(st.sampled_from(["title", "context"]))
        records[k][field] += draw(st.sampled_from([" (edited)", "!", "x"]))
    return records, contexts, [f"'{missing.title}'"]


@pytest.mark.parametrize("how", KNOWLEDGE_SELF_EDIT_MUTATIONS)
@examples(5)
@given(data=st.data())
def test_knowledge_self_edit_file_errors_name_file_and_record(tmp_path, how, data):
    content, contexts, fragments = data.draw(bad_knowledge_self_edits(how))
    path = write_json(fresh_dir(tmp_path) / "self_edits.json", content)
    expect_error(lambda: parse_conditions(_knowledge_domain(), [f"file:{path}"], contexts, None), str(path),
                 *fragments)
    COUNTS["self-edits (knowledge)"] += 1


@functools.lru_cache(maxsize=None)
def _arc_domain_and_tasks():
    spec = domains()["arc"]
    tasks = load_tasks("builtin:tiny:3:0")
    return spec.build(_arc_cfg(), None, {"tasks": {"eval": tasks}}), tasks


ARC_SELF_EDIT_MUTATIONS = ["not-a-list", "missing-task", "renamed-task", "top-level"] + FILE_MUTATIONS


@st.composite
def bad_arc_self_edits(draw, how):
    """(file content, fragments): {task id: [self-edit text or object, ...]} for the selected tasks, broken."""
    _, tasks = _arc_domain_and_tasks()
    doc = {t.id: draw(st.lists(st.sampled_from([json.dumps(ORACLE), ORACLE]), min_size=1, max_size=2))
           for t in tasks}
    victim = draw(st.sampled_from([t.id for t in tasks]))
    if how == "not-a-list":
        doc[victim] = draw(NON_LISTS)
        return doc, [victim]
    if how in ("missing-task", "renamed-task"):
        items = doc.pop(victim)
        if how == "renamed-task":   # e.g. the id of the task before its split into one subtask per test input
            renamed = draw(st.sampled_from([victim.rsplit("-", 1)[0], victim.upper(), victim + " ", "task " + victim]))
            doc[renamed] = items
        return doc, [victim]
    if how == "top-level":
        return draw(st.one_of(NON_OBJECTS.filter(lambda x: not isinstance(x, dict)), st.just(list(doc.values())))), []
    return draw(broken_json_bytes(doc, how)), []


@pytest.mark.parametrize("how", ARC_SELF_EDIT_MUTATIONS)
@examples(8)
@given(data=st.data())
def test_arc_self_edit_file_errors_name_file_and_task(tmp_path, how, data):
    content, fragments = data.draw(bad_arc_self_edits(how))
    domain, tasks = _arc_domain_and_tasks()
    path = write_json(fresh_dir(tmp_path) / "arc_edits.json", content)
    expect_error(lambda: parse_conditions(domain, [f"file:{path}"], tasks, None), str(path), *fragments)
    COUNTS["self-edits (ARC)"] += 1


@pytest.mark.parametrize("domain_name", ["knowledge", "arc"])
@pytest.mark.parametrize("what", ["missing", "folder"])
def test_self_edit_path_that_is_not_a_file(tmp_path, domain_name, what):
    path = tmp_path / "edits.json"
    if what == "folder":
        path.mkdir()
    if domain_name == "arc":
        domain, contexts = _arc_domain_and_tasks()
    else:
        domain, contexts = _knowledge_domain(), parse_records(BUILTIN_RECORDS[:1], "selected passages")
    expect_error(lambda: parse_conditions(domain, [f"file:{path}"], contexts, None), str(path))
    COUNTS[f"self-edits ({'ARC' if domain_name == 'arc' else 'knowledge'})"] += 1


# ----------------------------------------------------------------------------------------- oracle JSON

ORACLE_FIELDS = {
    **{f"data_generation.{k}": "bool" for k in ORACLE["data_generation"]},
    "training.strategy": "strategy", "training.learning_rate": "lr", "training.num_train_epochs": "epochs"}
ORACLE_MUTATIONS = ["drop", "value", "extra-key", "section", "nested", "top-level", "not-json"]


def bad_oracle_value(kind):
    """Values the self-edit schema refuses (it is strict: "2" is no number, 1 no boolean, 2.0 no integer)."""
    if kind == "bool":
        return st.one_of(st.sampled_from(["true", "false", 0, 1, None, [], {}]), TEXT, BIG)
    if kind == "strategy":
        return st.one_of(TEXT, BIG, st.none(), st.just(["train_using_all_tokens"]))
    if kind == "lr":
        return st.one_of(st.floats(max_value=9.9e-7), st.floats(min_value=1.01e-2), st.sampled_from(
            [float("nan"), float("inf"), "1e-3", True, None, 0, 1, [1e-3]]))
    return st.one_of(st.integers(max_value=0), st.integers(min_value=11, max_value=10**30),
                     st.sampled_from([2.5, 2.0, "2", True, None, float("nan")]))


@st.composite
def bad_oracle(draw, how):
    """(the oracle value, the field path the error must name)."""
    oracle = copy.deepcopy(ORACLE)
    if how == "drop":
        key = draw(st.sampled_from(sorted(ORACLE_FIELDS) + ["data_generation", "training"]))
        section, _, name = key.partition(".")
        del (oracle[section] if name else oracle)[name or section]
        return oracle, key
    if how == "value":
        key = draw(st.sampled_from(sorted(ORACLE_FIELDS)))
        section, name = key.split(".")
        oracle[section][name] = draw(bad_oracle_value(ORACLE_FIELDS[key]))
        return oracle, key
    if how == "extra-key":
        name = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k not in ORACLE and
                                                                         k not in ORACLE["training"] and
                                                                         k not in ORACLE["data_generation"]))
        section = draw(st.sampled_from(["", "data_generation", "training"]))
        (oracle[section] if section else oracle)[name] = draw(st.one_of(TEXT, BIG, st.booleans()))
        return oracle, f"{section}.{name}" if section else name
    if how == "section":
        section = draw(st.sampled_from(["data_generation", "training"]))
        oracle[section] = draw(NON_OBJECTS)
        return oracle, section
    if how == "nested":
        return {"oracle": oracle}, "data_generation"
    return draw(NON_OBJECTS.filter(lambda x: not isinstance(x, dict))), "oracle"


def _not_json(text):
    try:
        json.loads(text)
        return False
    except ValueError:
        return True


@pytest.mark.parametrize("how", ORACLE_MUTATIONS)
@examples(8)
@given(data=st.data())
def test_oracle_errors_name_the_field(tmp_path, capsys, how, data):
    """The oracle arrives as `--oracle JSON` on the command line, or under domain.oracle in a config file."""
    folder = fresh_dir(tmp_path)
    if how == "not-json":
        text = json.dumps(ORACLE)
        text = data.draw(st.one_of(st.integers(0, len(text) - 1).map(lambda n: text[:n]), TEXT.filter(_not_json),
                                   st.just(text.replace(":", "=", 1))))
        assert "--oracle" in run_cli(["arc", "eval", "--oracle", text], folder, capsys)
    else:
        value, field = data.draw(bad_oracle(how))
        if data.draw(st.booleans()):
            assert field in run_cli(["arc", "eval", "--oracle", json.dumps(value)], folder, capsys)
        else:
            path = write(folder / "arc.yaml", to_yaml({"domain": {"oracle": value}}))
            expect_error(lambda: resolve(domains()["arc"].recipe_config("eval"), path), str(path), field)
    COUNTS["oracle JSON"] += 1


# ----------------------------------------------------------------------------------------- config files

@functools.lru_cache(maxsize=None)
def KNOWLEDGE_EVAL():
    return domains()["knowledge"].recipe_config("eval")


BASE_CONFIG = {"domain": {"n": 2, "data": "builtin:eval", "prompt": "implications"}, "run": {"seed": 0},
               "inner": {"rank": 8, "lr": 1e-3, "epochs": 1}, "eval": {"k": 1, "conditions": ["base", "passage"]},
               "generation": {"max_new_tokens": 16, "temperature": 1.0}}
PYDANTIC_BOOL_WORDS = {"0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes"}
# (section, key) -> what is allowed there; bools are never used as wrong values (pydantic takes them as numbers)
CONFIG_FIELDS = {
    ("domain", "n"): "int>=0", ("domain", "start"): "int>=0", ("domain", "answer_tokens"): "int>=1",
    ("eval", "k"): "int>=1", ("eval", "repeats"): "int>=1", ("inner", "rank"): "int>=1",
    ("inner", "epochs"): "int>=1", ("inner", "batch_size"): "int>=1", ("generation", "max_new_tokens"): "int>=1",
    ("run", "seed"): "int", ("inner", "lr"): "(0,1)", ("inner", "dropout"): "[0,1)",
    ("generation", "temperature"): "[0,10]", ("generation", "top_p"): "(0,1]", ("run", "show_progress"): "bool",
    ("eval", "conditions"): "list", ("domain", "prompt"): "str", ("domain", "split"): "choice",
    ("inner", "schedule"): "choice", ("generation", "decoding"): "choice"}
CHOICES = ("lines", "segments", "none", "linear", "cosine", "constant", "free", "constrained")


def _not_float(text):
    try:
        float(text)
        return False
    except ValueError:
        return True


NON_NUMBERS = st.one_of(TEXT.filter(_not_float), st.lists(BIG, min_size=1, max_size=2),
                        st.dictionaries(TEXT, BIG, min_size=1, max_size=2))


def outside(low, high, ends):
    """Floats outside the interval from `low` to `high` (`ends` e.g. "(]": which ends belong to it), and NaN."""
    below = st.floats(max_value=low) if ends[0] == "(" else st.floats(max_value=low - 1e-9)
    above = st.floats(min_value=high) if ends[1] == ")" else st.floats(min_value=high + 1e-6)
    return st.one_of(below, above, st.just(float("nan")))


def bad_config_value(kind):
    if kind.startswith("int"):
        wrong = st.one_of(NON_NUMBERS, st.floats(allow_nan=True).filter(lambda x: x != x or x % 1 != 0))
        return wrong if kind == "int" else st.one_of(wrong, st.integers(-10**30, int(kind[-1]) - 1))
    if kind[0] in "([":
        low, high = map(float, kind[1:-1].split(","))
        return st.one_of(NON_NUMBERS, outside(low, high, kind[0] + kind[-1]))
    if kind == "bool":
        return st.one_of(TEXT.filter(lambda s: s.strip().lower() not in PYDANTIC_BOOL_WORDS),
                         BIG.filter(lambda x: x not in (0, 1)), st.lists(BIG, max_size=2))
    if kind == "list":
        return st.one_of(TEXT, BIG, st.dictionaries(TEXT, TEXT, max_size=2), st.just([]),
                         st.lists(st.one_of(BIG, st.none(), st.lists(TEXT, max_size=1)), min_size=1, max_size=2))
    if kind == "str":
        return st.one_of(st.none(), BIG, FLOATS, st.lists(TEXT, max_size=2), st.dictionaries(TEXT, TEXT, max_size=1))
    return st.one_of(TEXT.filter(lambda s: s not in CHOICES), BIG)


YAML_BREAKERS = ["inner: [1, 2\n", "\tx: 1\n", "a: b: c\n", "x: *undefined\n", "{{\n", "eval:\n  k: 1\n",
                 "inner:\n  lr: 0.001\n  lr: 0.002\n", "x: ${nope.nothing}\n", "- item\n"]
CONFIG_MUTATIONS = ["unknown-section", "unknown-key", "value", "nested-value", "list-item", "section", "top-level",
                    "syntax", "non-utf8", "recipe", "preset", "non-string-key"]
LIST_FIELDS = {("eval", "conditions"): ["base", "passage"], ("inner", "target_modules"): ["q_proj", "v_proj"],
               ("run", "log_to"): ["jsonl"], ("seeds", "trial"): ["{condition}", "{context}"]}


@st.composite
def bad_config(draw, how=None):
    """(file content, fragments besides the path) of a broken `seal knowledge eval` config."""
    doc = copy.deepcopy(BASE_CONFIG)
    sections = list(KNOWLEDGE_EVAL().sections)
    how = how or draw(st.sampled_from(CONFIG_MUTATIONS))
    fragments: list[str] = []
    if how == "unknown-section":
        name = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda s: s not in sections + ["recipe"]))
        doc[name] = draw(st.one_of(st.dictionaries(TEXT, BIG, max_size=2), BIG))
        fragments = [repr(name)]
    elif how == "unknown-key":
        section = draw(st.sampled_from(sorted(BASE_CONFIG)))
        fields = {f.name for f in dataclasses.fields(KNOWLEDGE_EVAL().sections[section])}
        key = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda s: s not in fields))
        doc[section][key] = draw(st.one_of(TEXT, BIG))
        fragments = [f"{section}.{key}"]
    elif how in ("value", "nested-value"):
        section, key = draw(st.sampled_from(sorted(CONFIG_FIELDS)))
        value = draw(bad_config_value(CONFIG_FIELDS[section, key])) if how == "value" else \
            {"value": doc.get(section, {}).get(key, 1)}
        doc.setdefault(section, {})[key] = value
        fragments = [section, key]
    elif how == "list-item":   # one item of a list of strings is not a string
        section, key = draw(st.sampled_from(sorted(LIST_FIELDS)))
        items = list(LIST_FIELDS[section, key])
        items.insert(draw(st.integers(0, len(items))), draw(st.one_of(BIG, st.none(), st.lists(TEXT, max_size=1),
                                                                      st.dictionaries(TEXT, TEXT, max_size=1))))
        doc.setdefault(section, {})[key] = items
        fragments = [f"{section}.{key}"]
    elif how == "section":
        section = draw(st.sampled_from(sorted(BASE_CONFIG)))
        doc[section] = draw(st.one_of(st.none(), BIG, TEXT, st.lists(BIG, max_size=2)))
        fragments = [repr(section)]
    elif how == "top-level":
        return draw(st.one_of(st.lists(BIG, min_size=1, max_size=2).map(to_yaml), WORD,
                              st.just(to_yaml([doc])), BIG.map(str))), []
    elif how == "syntax":
        lines = to_yaml(doc).splitlines(keepends=True)
        at = draw(st.sampled_from([i for i, line in enumerate(lines + [""]) if not line.startswith(" ")]))
        return "".join(lines[:at]) + draw(st.sampled_from(YAML_BREAKERS)) + "".join(lines[at:]), []
    elif how == "non-utf8":
        raw = to_yaml(doc).encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(BAD_BYTES) + raw[at:], []
    elif how == "recipe":
        other = draw(st.sampled_from(["arc eval", "knowledge train", "knowledge cpt", "demo"]) | WORD)
        doc = {"recipe": other, **doc}
        fragments = [str(other)]
    elif how == "preset":
        doc["inner"]["preset"] = draw(st.one_of(TEXT.filter(lambda s: s not in ("paper", "small", "arc-paper",
                                                                              "arc-small")),
                                                st.lists(TEXT, min_size=1, max_size=2), BIG))
        fragments = ["inner.preset"]
    else:
        section = draw(st.sampled_from([None, *sorted(BASE_CONFIG)]))
        key = draw(st.one_of(BIG, st.booleans(), st.floats(allow_nan=False, allow_infinity=False)))
        (doc[section] if section else doc)[key] = draw(BIG)
    return to_yaml(doc), fragments


@pytest.mark.parametrize("how", CONFIG_MUTATIONS)
@examples(10)
@given(data=st.data())
def test_config_file_errors_name_file_and_key(tmp_path, how, data):
    content, fragments = data.draw(bad_config(how))
    path = write(fresh_dir(tmp_path) / "config.yaml", content)
    expect_error(lambda: resolve(KNOWLEDGE_EVAL(), path, {}, []), str(path), *fragments)
    COUNTS["config file"] += 1


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_config_path_that_is_not_a_file(tmp_path, what):
    path = tmp_path / "config.yaml"
    if what == "folder":
        path.mkdir()
    expect_error(lambda: resolve(KNOWLEDGE_EVAL(), path, {}, []), str(path))
    COUNTS["config file"] += 1


# ----------------------------------------------------------------------------------------- CLI arguments

def run_cli(argv, folder: Path, capsys) -> str:
    """`seal ARGV` in-process with a run folder and a "model" folder that holds no model: must exit 2 with one
    `seal: error:` line on stderr, no traceback and no run store (so nothing got as far as loading a model);
    returns that line."""
    not_a_model = folder / "not-a-model"
    not_a_model.mkdir(exist_ok=True)
    out = folder / "run"
    capsys.readouterr()
    start = time.monotonic()
    try:
        rc = main([*argv, "--model", str(not_a_model), "--out", str(out)])
    except SystemExit as e:   # argparse
        rc = e.code
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("seal: error:")]
    others = [line for line in captured.err.splitlines() if not line.startswith("seal:")]
    assert rc == 2 and len(errors) == 1 and not others, (rc, captured.err[-2000:])
    assert not (out / "store.sqlite").exists(), "a run was started"
    assert elapsed < 20, f"{elapsed:.1f} s: more than input checks ran"
    return errors[0]


INT_FLAGS = {"n": 0, "start": 0, "k": 1, "repeats": 1, "max-new-tokens": 1, "rank": 1, "epochs": 1,
             "batch-size": 1, "adapters-per-pack": 1, "seed": None}
ARC_INT_FLAGS = {"max-examples": 1, "max-tokens": 1, "n-permutations": 1}
FLOAT_FLAGS = {"lr": (0, 1, "()"), "temperature": (0, 10, "[]"), "dropout": (0, 1, "[)")}
CHOICE_FLAGS = {"split": ("lines", "segments", "none"), "preset": ("paper", "small", "arc-paper", "arc-small"),
                "schedule": ("linear", "cosine", "constant"), "self-edit-decoding": ("free", "constrained"),
                "reward": ("accuracy", "gain")}
SET_ITEMS = [("nope.x=1", "nope"), ("inner.nope=1", "inner.nope"), ("eval.k=abc", "eval.k"), ("eval.k=0", "k"),
             ("inner.lr=-1", "lr"), ("noequals", "noequals"), ("=1", "=1"), ("domain.n=${x}", "domain.n"),
             ("inner=3", "inner"), ("eval.conditions=[1]", "eval.conditions"),
             ("domain.prompt=file:/nonexistent/t", "/nonexistent/t")]
CONDITIONS = [("base,magic", "magic"), ("base,base", "twice"), ("file:/nonexistent/x.json", "/nonexistent/x.json"),
              ("endpoint:", "endpoint"), ("endpoint:gpt-4.1", "endpoint URL"), (",", "no conditions"),
              ("generator:/nonexistent", "generator")]
CLI_MUTATIONS = ["int", "arc-int", "float", "choice", "set", "config", "conditions", "device", "dtype",
                 "unknown-flag", "extra-argument"]
KNOWN_DTYPES = {"auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32", "fp64", "float64"}
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)


def _not_int(text):
    try:
        int(text)
        return False
    except ValueError:
        return True


@st.composite
def bad_command_line(draw, folder, how):
    """(argv, a word the error must contain)."""
    if how in ("int", "arc-int"):
        flags = INT_FLAGS if how == "int" else ARC_INT_FLAGS
        flag = draw(st.sampled_from(sorted(flags)))
        values = [ANY_TEXT.filter(_not_int), st.integers(4_301, 6_000).map(lambda n: "9" * n),
                  st.floats(allow_nan=True).filter(lambda x: x != x or x % 1 != 0).map(repr)]
        if flags[flag] is not None:
            values.append(st.integers(min_value=-10**30, max_value=flags[flag] - 1).map(str))
        value = draw(st.one_of(*values))
        # argparse names the flag; a number out of bounds is the config's error, naming the key
        word = f"--{flag}" if _not_int(value) else flag.replace("-", "_")
        return ["knowledge" if how == "int" else "arc", "eval", f"--{flag}={value}"], word
    if how == "float":
        flag = draw(st.sampled_from(sorted(FLOAT_FLAGS)))
        low, high, ends = FLOAT_FLAGS[flag]
        value = draw(st.one_of(ANY_TEXT.filter(_not_float), st.sampled_from(["nan", "inf", "-inf", "NaN"]),
                               outside(low, high, ends).map(repr)))
        return ["knowledge", "eval", f"--{flag}={value}"], flag if not _not_float(value) else f"--{flag}"
    if how == "choice":
        flag = draw(st.sampled_from(sorted(CHOICE_FLAGS)))
        value = draw(ANY_TEXT.filter(lambda v: v not in CHOICE_FLAGS[flag]))
        return ["knowledge", "eval", f"--{flag}={value}"], f"--{flag}"
    if how == "set":
        item, word = draw(st.sampled_from(SET_ITEMS))
        return ["knowledge", "eval", "--set", item], word
    if how == "conditions":
        value, word = draw(st.sampled_from(CONDITIONS))
        return ["knowledge", "eval", f"--conditions={value}"], word
    if how == "device":   # torch's own device strings, misspelt or with a bad index
        value = draw(st.one_of(WORD.filter(lambda w: w not in ("cpu", "cuda", "mps", "meta", "xpu", "hpu", "xla",
                                                                "lazy", "ipu", "hip", "ve", "fpga", "maia", "mtia",
                                                                "mkldnn", "opengl", "opencl", "ideep", "vulkan",
                                                                "auto")),
                               st.sampled_from(["cuda:x", "cuda:-1", "CPU", "cpu:", "cuda:0:1"])))
        return ["knowledge", "eval", f"--device={value}"], "device"
    if how == "dtype":
        value = draw(ANY_TEXT.filter(lambda v: v and v not in KNOWN_DTYPES))
        return ["knowledge", "eval", f"--dtype={value}"], "dtype"
    if how == "config":
        content, _ = draw(bad_config())
        path = write(folder / "config.yaml", content)
        return ["knowledge", "eval", "--config", str(path)], str(path)
    if how == "unknown-flag":
        name = "zz" + draw(st.from_regex(r"[a-z-]{0,10}", fullmatch=True))
        return ["knowledge", "eval", f"--{name}", "1"], f"--{name}"
    word = draw(st.from_regex(r"[a-z]{1,10}", fullmatch=True))
    return ["knowledge", "eval", word], word


@pytest.mark.parametrize("how", CLI_MUTATIONS)
@examples(10)
@given(data=st.data())
def test_bad_command_lines_exit_2_with_one_line(tmp_path, capsys, how, data):
    folder = fresh_dir(tmp_path)
    argv, word = data.draw(bad_command_line(folder, how))
    line = run_cli(argv, folder, capsys)
    assert word in line, (word, line)
    COUNTS["CLI arguments"] += 1


# ----------------------------------------------------------------------------------------- real CLI runs

def _bad_files(folder: Path) -> dict:
    records = copy.deepcopy(BUILTIN_RECORDS[:3])
    records[1]["questions"][0]["answer"] = 1912
    ragged = {"train": [{"input": [[1, 2], [3, 4]], "output": [[1, 2], [3]]}],
              "test": [{"input": [[0]], "output": [[0]]}]}
    return {
        "data": (["knowledge", "eval", "--data", str(write_json(folder / "passages.json", records))],
                 ["record 1", "questions[0].answer"]),
        "tasks": (["arc", "eval", "--tasks", str(write_json(folder / "ragged.json", ragged))],
                  ["task ragged, train pair 0, output", "row 1"]),
        "prompt": (["knowledge", "eval", "--prompt", f"file:{write(folder / 'tpl.txt', 'Read {passage}.')}"],
                   ["passage"]),
        "config": (["knowledge", "eval", "--config", str(write(folder / "c.yaml", "inner:\n  lr: fast\n"))],
                   ["inner.lr"]),
        "argument": (["knowledge", "eval", "--n", "many"], ["--n", "many"]),
    }


@pytest.mark.parametrize("case", ["data", "tasks", "prompt", "config", "argument"])
def test_real_cli_runs_exit_2_with_one_line_naming_the_file(tmp_path, case):
    argv, fragments = _bad_files(tmp_path)[case]
    named = [a.removeprefix("file:") for a in argv if "/" in a]
    (tmp_path / "not-a-model").mkdir()
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "seal", *argv, "--model", str(tmp_path / "not-a-model"),
                        "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    errors = [line for line in lines if line.startswith("seal: error:")]
    assert len(errors) == 1 and all(line.startswith("seal:") for line in lines), r.stderr
    for fragment in [*named, *fragments]:
        assert fragment in errors[0], (fragment, errors[0])
    assert not (out / "store.sqlite").exists()

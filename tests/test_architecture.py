"""The layers import one way (CLI -> domains -> experiment -> engine), and every registered domain answers the
Domain protocol by behaviour: a small context through each of its methods."""
import ast
import json
from pathlib import Path

import pytest

from seal.engine.protocol import PROTOCOL_ATTRIBUTES, PROTOCOL_METHODS, ContextView, Domain, Evaluation, Update

SRC = Path(__file__).resolve().parents[1] / "src" / "seal"


def _imports(path: Path) -> set[str]:
    """Every seal module a file imports, relative imports resolved."""
    pkg = ["seal", *path.relative_to(SRC).with_suffix("").parts][:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("seal")}


@pytest.mark.parametrize("layer,forbidden", [("engine", ("seal.experiment", "seal.domains", "seal.report",
                                                         "seal.cli", "seal.api")),
                                             ("experiment", ("seal.domains", "seal.report", "seal.cli", "seal.api")),
                                             ("report", ("seal.domains", "seal.cli", "seal.api"))])
def test_layers_import_one_way(layer, forbidden):
    bad = [(str(f.relative_to(SRC)), m) for f in (SRC / layer).rglob("*.py") for m in _imports(f)
           if m.startswith(forbidden)]
    assert not bad, bad


def test_the_import_check_sees_relative_imports():
    assert "seal.engine.store" in _imports(SRC / "experiment" / "run.py")


def _knowledge():
    from seal.domains.knowledge.data import Passage, Question
    from seal.domains.knowledge.domain import KnowledgeDomain
    p = Passage("Glass Harbor", "Glass Harbor was founded in 1820 by Mira Tolan.",
                [Question("Who founded Glass Harbor?", "Mira Tolan")])
    return KnowledgeDomain(passages={"eval": [p], "train": [p]}), p, "Mira Tolan founded Glass Harbor.", \
        ["Mira Tolan did"], 1.0


def _knowledge_file(path, ctx, text):
    p = ctx.passages[0] if hasattr(ctx, "passages") else ctx
    path.write_text(json.dumps([{"title": p.title, "context": p.context, "completions": [text],
                                 "questions": [{"question": q.question, "answer": q.answer} for q in p.questions]}]))


FILES = {"knowledge": _knowledge_file, "knowledge-pooled": _knowledge_file,
         "arc": lambda path, ctx, text: path.write_text(json.dumps({ctx.id: [json.loads(text)]})),
         "toy": lambda path, ctx, text: path.write_text(text + "\n")}


def _pooled():
    from seal.domains.knowledge.pooled import PooledDomain
    inner, p, text, _, _ = _knowledge()
    dom = PooledDomain(inner)
    return dom, dom.contexts("eval")[0], "### passage 1\n" + text, ["Mira Tolan"], 1.0


def _arc():
    from seal.domains.arc.domain import ArcDomain, ArcSettings
    from seal.domains.arc.generator import generate_tasks
    from seal.domains.arc.serialize import grid_to_text
    from seal.domains.arc.spec import ORACLE
    task = generate_tasks(1, seed=3, difficulty="easy")[0]
    dom = ArcDomain(lambda p: p.text, lambda t: len(t.split()), ArcSettings(max_examples=4), tasks={"eval": [task]},
                    oracle=ORACLE)
    right = [grid_to_text(q.view.apply(t.output)) for t, qs in zip(task.test, dom._queries(task)) for q in qs]
    return dom, task, json.dumps(ORACLE), right, 1.0


def _toy():
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "plugins"))
    from toy_seal import ToyDomain, ToySection
    dom = ToyDomain(ToySection())
    c = dom.contexts("eval")[0]
    return dom, c, f"The word of {c.name} is {c.word}.", [f" {c.word}"], 1.0


@pytest.mark.parametrize("make", [_knowledge, _pooled, _arc, _toy], ids=["knowledge", "pooled", "arc", "toy"])
def test_every_domain_answers_the_protocol_by_behaviour(make, tmp_path, smol):
    dom, ctx, good_text, right_answers, right_accuracy = make()
    assert isinstance(dom, Domain)
    assert all(hasattr(dom, a) for a in PROTOCOL_ATTRIBUTES + PROTOCOL_METHODS)
    assert ctx in list(dom.contexts("eval")) and isinstance(ctx.id, str)
    assert isinstance(dom.self_edit_prompt(ctx), str) and dom.self_edit_prompt(ctx)
    assert isinstance(dom.self_edit_message(ctx), str) and dom.self_edit_message(ctx)
    constraint = dom.self_edit_constraint(smol.tokenizer)
    assert constraint is None or (constraint.min_new_tokens > 0 and constraint.allowed([])), constraint
    upd = dom.parse_self_edit(ctx, good_text)
    assert isinstance(upd, Update) and upd.error is None and (upd.texts or upd.pairs)
    bad = dom.parse_self_edit(ctx, "")
    assert bad.error and not bad.texts and not bad.pairs
    for name in dom.baselines:
        b = dom.baseline_update(name, ctx)
        assert b.error is None and (b.texts or b.pairs)
    with pytest.raises(ValueError):
        dom.baseline_update("no-such-baseline", ctx)
    prompts = dom.eval_prompts(ctx)
    assert prompts and all(isinstance(p, str) for p in prompts)
    ev = dom.grade(ctx, right_answers)
    assert isinstance(ev, Evaluation) and ev.accuracy == right_accuracy and len(ev.grades) >= 1
    wrong = dom.grade(ctx, ["zzz"] * len(prompts))
    assert wrong.accuracy == 0.0 and dom.reward(wrong) == 0.0
    assert dom.reward(ev, wrong) >= dom.reward(wrong, wrong)
    # self-edits written elsewhere, read from a file in the domain's own format, parse like the model's own
    path = tmp_path / "self_edits"
    FILES[dom.name](path, ctx, good_text.split("\n", 1)[-1] if dom.name == "knowledge-pooled" else good_text)
    read = dom.read_self_edits(str(path), [ctx])
    assert list(read) == [ctx.id] and len(read[ctx.id]) == 1
    assert dom.parse_self_edit(ctx, read[ctx.id][0]).error is None
    view = dom.describe(ctx)
    assert isinstance(view, ContextView) and len(view.questions) == len(view.gold) >= 1
    assert dom.no_update not in dom.baselines and dom.answer_tokens > 0 and dom.answer_batch > 0

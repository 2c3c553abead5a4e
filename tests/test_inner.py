"""The inner loop on the real built-in model: base restored bit for bit, facts learned, batched == alone."""
import torch

from seal.engine.lora import AdapterPack
from seal.engine.training import StackedAdamW, TrainJob, train_pack
from seal.engine.config import InnerConfig
from seal.engine.protocol import Update
from seal.domains.knowledge import KnowledgeDomain, Passage, Question
from seal.engine.generation import generate, render_prompt
from seal.engine.inner import InnerLoop, Trial, tokenize_update

from .conftest import state_hash

FACT = Passage("Varnholt Observatory",
               "The Varnholt Observatory was founded in 1873 by the astronomer Quessa Tirelli.",
               [Question("In what year was the Varnholt Observatory founded?", "1873"),
                Question("Who founded the Varnholt Observatory?", "Quessa Tirelli")])


def _domain(lm):
    return KnowledgeDomain("implications", render=lambda t, p="": render_prompt(lm, t, p))


def test_fact_only_in_training_sequence_is_learned_and_base_restored_exactly(smol):
    before = state_hash(smol.model)
    dom = _domain(smol)
    cfg = InnerConfig(epochs=12, lr=1e-3, adapters_per_pack=2)
    loop = InnerLoop(smol, dom, cfg, show_progress=False)
    base = loop.base_evaluations([FACT])[0]
    assert not any("1873" in a for a in base.answers)   # the base model does not know it
    update = Update(texts=["Varnholt Observatory\nThe Varnholt Observatory was founded in 1873.",
                           "Varnholt Observatory\nQuessa Tirelli founded the Varnholt Observatory in 1873."])
    [res] = loop.run([Trial("t", FACT, update, seed=1)])
    assert res.error is None
    assert "1873" in res.evaluation.answers[0]           # the answer changed to the trained fact
    assert res.reward == res.evaluation.accuracy > base.accuracy
    after = state_hash(smol.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert loop.base_evaluations([FACT])[0].answers == base.answers
    # The gain reward compares with the base evaluation of the same context, looked up by its id (a copy of the
    # context, as a resumed run or another worker holds, finds it too).
    gain = InnerLoop(smol, KnowledgeDomain("implications", render=dom.render, reward="gain"), cfg,
                     show_progress=False)
    copy = Passage(FACT.title, FACT.context, list(FACT.questions))
    [res2] = gain.run([Trial("g", copy, update, seed=1)], bases={FACT.id: base})
    assert res2.reward == res2.evaluation.accuracy - base.accuracy == res.reward - base.accuracy


def test_diverging_trial_gets_reward_zero_and_the_run_goes_on(smol):
    before = state_hash(smol.model)
    loop = InnerLoop(smol, _domain(smol), InnerConfig(epochs=3, adapters_per_pack=2), show_progress=False)
    good = Update(texts=["Varnholt Observatory\nIt was founded in 1873."])
    bad = Update(texts=good.texts, overrides={"lr": 1e30})   # blows the adapter up to inf/NaN
    results = {r.key: r for r in loop.run([Trial("bad", FACT, bad, 1), Trial("good", FACT, good, 2),
                                           Trial("empty", FACT, Update(error="empty self-edit"), 3)])}
    assert results["bad"].reward == 0.0 and "diverged" in results["bad"].error
    assert results["empty"].reward == 0.0 and results["empty"].error == "empty self-edit"
    assert results["good"].error is None and results["good"].evaluation is not None
    after = state_hash(smol.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _jobs(tok):
    texts = [["Alpha\nThe Orlune Basin holds the town of Kessary.", "Alpha\nKessary is famous for blue glass."],
             ["Beta\nDovan Pell wrote three operas.", "Beta\nHis last opera was named Halcyne.",
              "Beta\nIt premiered in 1911 in Sarnet."],
             ["Gamma\nThe Vossen company traded salt."]]
    settings = [(1e-3, 3, 1), (5e-4, 2, 2), (2e-3, 5, 1)]   # different lr, epochs, batch size => step counts
    jobs = []
    for i, (t, (lr, ep, bs)) in enumerate(zip(texts, settings)):
        ids, masks = tokenize_update(tok, Update(texts=t), 128)
        jobs.append(TrainJob(ids, masks, lr=lr, epochs=ep, batch_size=bs, seed=10 + i))
    return jobs


def test_batched_training_equals_training_each_adapter_alone(smol64):
    """In fp64 (model and adapters), tolerance 1e-10 absolute on weights of magnitude ~1e-2."""
    smol = smol64
    jobs = _jobs(smol.tokenizer)
    targets = ("q_proj", "v_proj", "down_proj")
    pad = smol.tokenizer.pad_token_id
    assert len({len(j.batches()) for j in jobs}) == 3
    f64 = torch.float64
    with AdapterPack(smol.model, 3, 8, 16, target_modules=targets, seeds=[j.seed for j in jobs], param_dtype=f64) as pack:
        outcomes = train_pack(pack, jobs, pad_id=pad)
        together = [pack.adapter_state(i) for i in range(3)]
    assert [o.steps for o in outcomes] == [len(j.batches()) for j in jobs]
    for i, job in enumerate(jobs):
        with AdapterPack(smol.model, 1, 8, 16, target_modules=targets, seeds=[job.seed], param_dtype=f64) as pack:
            train_pack(pack, [job], pad_id=pad)
            alone = pack.adapter_state(0)
        for k in alone:
            diff = (alone[k] - together[i][k]).abs().max().item()
            assert diff < 1e-10, (i, k, diff)
        moved = max(v.abs().max().item() for k, v in alone.items() if "lora_B" in k)
        assert moved > 1e-4  # the adapter did train


def test_batched_evaluation_equals_evaluating_each_adapter_alone(smol):
    jobs = _jobs(smol.tokenizer)[:2]
    prompts = [render_prompt(smol, "Answer briefly.\nTopic: Alpha\nQuestion: What is Kessary famous for?"),
               render_prompt(smol, "Answer briefly.\nTopic: Beta\nQuestion: What was Dovan Pell's last opera?"),
               render_prompt(smol, "Answer briefly.\nQuestion: What is the capital of France?")]
    with AdapterPack(smol.model, 2, 8, 16, target_modules="all-linear", seeds=[1, 2]) as pack:
        train_pack(pack, jobs, pad_id=smol.tokenizer.pad_token_id)
        rows = [(p, a) for a in (0, 1, -1) for p in prompts]
        together = generate(smol, [p for p, _ in rows], max_new_tokens=16, pack=pack,
                            adapter_index=[a for _, a in rows])
        alone = []
        for a in (0, 1, -1):
            alone += generate(smol, prompts, max_new_tokens=16, pack=pack, adapter_index=[a] * 3, batch_size=1)
    assert together == alone
    assert together[:3] != together[6:]   # the adapters change the answers


def test_stacked_adamw_matches_torch_adamw_for_one_adapter():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(1, 4, 3))
    ref = torch.nn.Parameter(w.detach().clone())
    ours = StackedAdamW([w], 1, weight_decay=0.01)
    theirs = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.01)
    for step in range(5):
        g = torch.randn(1, 4, 3)
        w.grad, ref.grad = g.clone(), g.clone()
        ours.step(torch.tensor([1e-2]), torch.tensor([True]))
        theirs.step()
    assert torch.allclose(w, ref, atol=1e-6)


def test_grouped_no_grad_lora_equals_per_row_lora():
    """Generation takes the grouped path (each adapter's rows together, no gradients; a one-token decode step
    with several adapters stacks them all in one matmul); training takes the per-row gather. All must give the
    same layer output for any routing, contiguous or not, with base rows, also after the weights change."""
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20))
    with AdapterPack(model, 3, rank=4, alpha=8.0, target_modules=("0",)) as pack:
        for _ in range(2):                             # the second time, the stacked B must be rebuilt
            with torch.no_grad():
                for p in pack.parameters():
                    p.normal_()
            for x in (torch.randn(7, 5, 12), torch.randn(7, 1, 12)):
                for index in ([2, 0, 2, -1, 1, 0, 2], [1, 1, 1, 0, 0, -1, -1], [-1] * 7):
                    with pack.route(index):
                        per_row = model(x)                     # grad enabled: per-row gather
                        with torch.no_grad():
                            grouped = model(x)
                    assert torch.allclose(per_row, grouped, atol=1e-5), index
                    assert not torch.equal(grouped[0], model[0].base(x)[0]) or index[0] == -1


def test_early_stopped_prefix_cached_decoding_gives_transformers_answers(smol):
    """seal's greedy loop (rows leave at their answer's end, the shared prompt prefix computed once per
    adapter) gives exactly the answers of transformers' generate, fp32, through adapters and the base, with and
    without the first-line rule, one batch and several."""
    from seal.engine.generation import _common_prefix
    jobs = _jobs(smol.tokenizer)[:2]
    questions = ["What is Kessary famous for?", "What was Dovan Pell's last opera?",
                 "What is the capital of France? Answer in one word.", "Name three colours, one per line."]
    prompts = [render_prompt(smol, "Answer briefly.\nQuestion: " + q) for q in questions]
    encoded = [smol.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert _common_prefix(encoded) >= 10                  # the chat template's system turn and the instruction
    with AdapterPack(smol.model, 2, 8, 16, target_modules="all-linear", seeds=[1, 2]) as pack:
        train_pack(pack, jobs, pad_id=smol.tokenizer.pad_token_id)
        rows = [(p, a) for a in (1, -1, 0) for p in prompts]
        for newline in (True, False):
            for batch in (12, 5):
                kw = dict(max_new_tokens=24, pack=pack, adapter_index=[a for _, a in rows], batch_size=batch,
                          stop_at_newline=newline)
                ours = generate(smol, [p for p, _ in rows], decoder="seal", **kw)
                theirs = generate(smol, [p for p, _ in rows], decoder="hf", **kw)
                assert ours == theirs, (newline, batch)
                if not newline:
                    assert any("\n" in a for a in ours)   # the rule is what cuts, not the loop
    assert len(set(ours[:4])) > 1 and ours[:4] != ours[4:8]

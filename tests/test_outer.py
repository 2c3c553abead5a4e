"""The outer loop's parts: selection rules, completion-only loss, merging, and checkpoints that reload."""
import pytest
import torch
from torch.nn import functional as F

from seal.engine.lora import AdapterPack, merge_adapter_state
from seal.engine.training import TrainJob, train_pack
from seal.engine.protocol import Update
from seal.engine.training import finetune_and_merge, tokenize_update
from seal.engine.models import load_model
from seal.engine.config import FinetuneConfig as SFTConfig
from seal.experiment.restem import Candidate, select_self_edits

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _cands():
    # context a: samples rewarded 0.2, 0.5, 0.5 (tie: the earlier wins); base 0.6, so nothing beats it
    # context b: 0.1, 0.7, 0.9 against base 0.3; context c: only a blank self-edit
    c = lambda ctx, s, reward, text: Candidate(ctx, s, reward, reward, True, text)
    return [c("a", 0, 0.2, "x"), c("a", 1, 0.5, "y"), c("a", 2, 0.5, "z"),
            c("b", 0, 0.1, "p"), c("b", 1, 0.7, "q"), c("b", 2, 0.9, "r"),
            Candidate("c", 0, 1.0, 1.0, True, "   ")]


def test_selection_rules():
    base = {"a": 0.6, "b": 0.3, "c": 0.0}
    pick = lambda rule: [(c.context_id, c.sample) for c in select_self_edits(_cands(), base, rule)]
    assert pick("best") == [("a", 1), ("b", 2)]             # paper: best even below the base; blank never
    assert pick("best-beats-base") == [("b", 2)]
    assert pick("all-beat-base") == [("b", 1), ("b", 2)]
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_self_edits(_cands(), base, "worst")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(str(tiny_dir), dtype="fp32")


def test_completion_only_loss(tiny):
    tok = tiny.tokenizer
    prompt, completion = "Tell me about the Vellmar bridge.\nImplications:\n", "It spans the Orrin river."
    ids, masks = tokenize_update(tok, Update(pairs=[(prompt, completion)]), 512)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert masks[0][:n_prompt] == [0] * n_prompt
    assert masks[0][n_prompt:] == [1] * (len(ids[0]) - n_prompt) and ids[0][-1] == tok.eos_token_id
    # The first training step's loss is the mean cross-entropy over the completion tokens (and EOS) only.
    with torch.no_grad():
        logits = tiny.model(input_ids=torch.tensor(ids)).logits[0, :-1]
    per_token = F.cross_entropy(logits, torch.tensor(ids[0][1:]), reduction="none")
    expected = per_token[n_prompt - 1:].mean().item()
    job = TrainJob(ids, masks, lr=1e-3, epochs=1, batch_size=1, seed=0)
    with AdapterPack(tiny.model, 1, 8, 16.0, 0.0, TARGETS) as pack:
        (out,) = train_pack(pack, [job], pad_id=tok.pad_token_id)
    assert out.losses[0] == pytest.approx(expected, rel=1e-5)
    assert abs(per_token.mean().item() - expected) > 1e-3   # the prompt would have changed it


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merge_equals_base_plus_adapter(tiny_dir):
    """fp64: the merged weights give the adapter's logits to 1e-9; the merge itself adds no error."""
    lm = load_model(str(tiny_dir), dtype="fp64")
    ids = torch.tensor([lm.tokenizer("The Orrin river runs past Vellmar.")["input_ids"]])
    with AdapterPack(lm.model, 2, 8, 16.0, 0.0, TARGETS, param_dtype=torch.float64) as pack:
        gen = torch.Generator().manual_seed(1)
        for layer in pack.layers.values():
            layer.lora_B.data.copy_(torch.randn(layer.lora_B.shape, generator=gen, dtype=torch.float64) * 0.05)
        with pack.route([1]):
            adapted = _logits(lm.model, ids)
        state = pack.adapter_state(1)
        base = _logits(lm.model, ids)   # no routing: the base
    assert (adapted - base).abs().max() > 1e-2   # the adapter does something
    merge_adapter_state(lm.model, state, 16.0 / 8)
    assert torch.allclose(_logits(lm.model, ids), adapted, atol=1e-9, rtol=0)


def test_generator_checkpoint_reloads_as_merged_model_and_peft_adapter(tiny_dir, tmp_path):
    """fp32: the saved merged folder reloads bit for bit; the PEFT adapter on the original base gives the
    merged model's logits within 1e-4 (PEFT adds B A x on the fly, the merge adds B A to W)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lm = load_model(str(tiny_dir), dtype="fp32")
    ids = torch.tensor([lm.tokenizer("Question: what spans the Orrin river?")["input_ids"]])
    before = _logits(lm.model, ids)
    pairs = [("Passage: the Vellmar bridge spans the Orrin.\nImplications:\n", "The Orrin has a bridge."),
             ("Passage: Kestrel is a town.\nImplications:\n", "Kestrel has people living in it.")]
    res = finetune_and_merge(lm, pairs, SFTConfig(rank=4, alpha=8.0, lr=1e-2, epochs=2, batch_size=2), seed=0,
                             out_dir=tmp_path / "ckpt")
    assert res.steps == 2 and res.examples == 2
    merged = _logits(lm.model, ids)
    assert (merged - before).abs().max() > 1e-3
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt" / "merged", dtype=torch.float32)
    assert torch.equal(_logits(reloaded, ids), merged)
    original = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(original, tmp_path / "ckpt" / "adapter")
    assert torch.allclose(_logits(peft_model, ids), merged, atol=1e-4, rtol=0)

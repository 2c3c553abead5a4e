"""Packed training and the trimmed output head equal the padded path and the full head, on the real model."""
import torch
from torch.nn import functional as F

from seal.engine.lora import AdapterPack
from seal.engine.packed import collate_packed, fused_head_ok, head_loss, pack_rows
from seal.engine.training import train_pack

from .test_inner import _jobs


def test_packed_training_equals_padded_training(smol64):
    """Losses at every step and the trained adapters, packed vs padded micro-batches, in fp64: tolerance 1e-9
    relative on losses and 1e-10 absolute on weights of magnitude ~1e-2. Rows of different lengths from three
    adapters with different step counts, one micro-batch budget small enough to split a step."""
    smol = smol64
    jobs = _jobs(smol.tokenizer)
    targets = ("q_proj", "k_proj", "v_proj", "down_proj")
    pad = smol.tokenizer.pad_token_id
    out = {}
    for packed in (False, True):
        for budget in (4096, 40):
            with AdapterPack(smol.model, 3, 8, 16, target_modules=targets, seeds=[j.seed for j in jobs],
                             param_dtype=torch.float64) as pack:
                outcomes = train_pack(pack, jobs, pad_id=pad, packed=packed, micro_batch_tokens=budget)
                out[packed, budget] = ([o.losses for o in outcomes], [pack.adapter_state(i) for i in range(3)])
    ref_losses, ref_states = out[False, 4096]
    for key, (losses, states) in out.items():
        for a, b in zip(losses, ref_losses):
            assert len(a) == len(b) and all(abs(x - y) <= 1e-9 * abs(y) for x, y in zip(a, b)), key
        for s, r in zip(states, ref_states):
            diff = max((s[k] - r[k]).abs().max().item() for k in r)
            assert diff < 1e-10, (key, diff)
    assert max(v.abs().max().item() for k, v in ref_states[0].items() if "lora_B" in k) > 1e-4


def test_packed_rows_keep_each_adapter_contiguous_and_attention_inside_rows(smol):
    jobs = _jobs(smol.tokenizer)
    rows = [(i, j) for i in range(3) for j in range(len(jobs[i].input_ids))]
    micros = pack_rows(rows, jobs, budget=30)
    assert [r for m in micros for r in m] == rows          # order kept, nothing lost
    assert all(sum(len(jobs[i].input_ids[j]) for i, j in m) <= 30 or len(m) == 1 for m in micros)
    batch = collate_packed(rows, jobs, "cpu")
    assert [a for a, _ in batch.spans] == [0, 1, 2]
    assert batch.positions[0, batch.cu[:-1]].tolist() == [0] * len(rows)
    # Each row's hidden states equal those of the row run alone: attention stays inside its row.
    from seal.engine.packed import packed_attention
    with torch.no_grad(), packed_attention(smol.model):
        lens = batch.cu[1:] - batch.cu[:-1]
        hidden = smol.model.base_model(input_ids=batch.ids, position_ids=batch.positions, use_cache=False,
                                       cu_seq_lens_q=batch.cu, max_length_q=int(lens.max())).last_hidden_state[0]
    for r, (i, j) in enumerate(rows):
        with torch.no_grad():
            alone = smol.model.base_model(input_ids=torch.tensor([jobs[i].input_ids[j]])).last_hidden_state[0]
        lo, hi = int(batch.cu[r]), int(batch.cu[r + 1])
        assert torch.allclose(hidden[lo:hi], alone, atol=1e-4), r
    assert smol.model.config._attn_implementation == "sdpa"   # put back after the block


def test_trimmed_fused_head_gives_the_full_heads_loss_and_gradient(smol64):
    """head_loss at some positions == cross-entropy of the full head's logits at those positions, values and
    gradient with respect to the hidden states (fp64, 1e-10), in several chunks."""
    model = smol64.model
    assert fused_head_ok(model)
    ids = torch.tensor([smol64.tokenizer("The Varnholt Observatory was founded in 1873 by Quessa Tirelli.")["input_ids"]])
    with torch.no_grad():
        hidden = model.base_model(input_ids=ids).last_hidden_state[0]
    pos = torch.tensor([0, 3, 4, 7, 9])
    labels = ids[0, pos + 1]
    h1 = hidden.clone().requires_grad_(True)
    logits = model.get_output_embeddings()(h1)               # the full head, every position
    full = F.cross_entropy(logits[pos], labels, reduction="none")
    w = torch.tensor([0.5, 1.0, 0.0, 2.0, 0.25], dtype=full.dtype)
    (full * w).sum().backward()
    h2 = hidden.clone().requires_grad_(True)
    mine = head_loss(model.get_output_embeddings(), h2[pos], labels, chunk=2)
    (mine.to(w.dtype) * w).sum().backward()
    assert torch.allclose(mine.double(), full.double(), rtol=1e-6)   # fp32 loss from fp64 logits
    assert torch.allclose(h2.grad, h1.grad, atol=1e-10)
    assert h2.grad[2].abs().sum() == 0 and h2.grad[pos[2]].abs().sum() == 0 or pos[2] == 2

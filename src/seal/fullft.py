"""Full finetuning of every weight, undone on exit: the update of the paper's final continued-pretraining runs.

Uses torch's AdamW and LambdaLR directly (a Trainer would add a dataset, collator and checkpointing around
three lines of work); batches come from the same `TrainJob` plan and length-aware micro-batches as the LoRA
path, so both kinds of update see the data in the same order.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.nn import functional as F

from .adapters import TrainJob, TrainOutcome, _collate, _micro_batches, lr_at


@contextmanager
def full_finetune(model: torch.nn.Module, job: TrainJob, schedule: str = "linear", weight_decay: float = 0.0,
                  max_grad_norm: float = 1.0, micro_batch_tokens: int = 4096, pad_id: int = 0, progress=None):
    """Train all of `model`'s weights on `job`; inside the block the model is the finetuned one, and leaving
    the block restores the original weights exactly. Yields a TrainOutcome."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    dev = params[0].device
    plan = job.batches()
    opt = torch.optim.AdamW(params, lr=job.lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, len(plan), 1.0, schedule))
    losses: list[float] = []
    failed = None
    try:
        for p in params:
            p.requires_grad_(True)
        model.train()
        for t, batch in enumerate(plan):
            rows = [(0, j) for j in batch]
            n_targets = max(1, sum(sum(job.loss_masks[j][1:]) for j in batch))
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in _micro_batches(rows, [job], micro_batch_tokens):
                ids, mask, target, _ = _collate(micro, [job], pad_id, dev)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                tok = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none") * target[:, 1:]
                loss = tok.sum() / n_targets
                loss.backward()
                step_loss += float(loss.detach())
            if not torch.isfinite(torch.tensor(step_loss)):
                failed = f"non-finite loss at step {t}"
                break
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            losses.append(step_loss)
            if progress is not None:
                progress(t + 1, len(plan))
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.requires_grad_(False)
        model.eval()
        yield TrainOutcome(steps=len(losses), final_loss=losses[-1] if losses else None, failed=failed,
                           losses=losses)
    finally:
        for p in params:
            p.requires_grad_(False)
        del opt
        model.load_state_dict(saved)
        model.eval()

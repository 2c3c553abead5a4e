"""The sanity check of SEAL's machinery (issue 15, part 2): with rounds that reuse the same training contexts, the
mean reward of freshly sampled self-edits on those contexts rises round over round. ReST-EM clones its best
samples, so if even this fails, something between sampling, scoring, selection, the generator's finetune and the
merge is wrong.

The reward here is one the tiny random model can learn. A self-edit is 8 words, each " yes" or " no" (constrained
decoding: the domain allows only those two tokens), trained as the completion of the context's question; the
updated model's answer scores the share of its words that are "yes". A random model writes about as many of
each, with a spread between samples that makes the best of k worth cloning, and what the finetune has to learn
(write "yes" more often) is within reach of a model this small, whose random embeddings cannot make any single
text likely. Nothing about the real domains is assumed."""
from dataclasses import dataclass

import pytest

from seal.engine.protocol import Constraint, ContextView, Evaluation, Update
from seal.engine.store import RunStore
from seal.experiment.config import resolve
from seal.experiment.recipes import DomainSpec, standard_recipes
from seal.experiment.results import context_rewards, self_edit_rewards

WORDS = (" yes", " no")


@dataclass(frozen=True)
class Name:
    id: str


@dataclass
class EchoSection:
    n_train: int = 4


def yes_share(text: str) -> float:
    words = text.split()
    return sum(w == "yes" for w in words) / len(words) if words else 0.0


class EchoDomain:
    """Each context is a name; its self-edit (8 of " yes" / " no") is trained as the answer to "Recall NAME:"; the
    reward is the share of "yes" in the answer."""
    name = "echo"
    baselines = ()
    no_update = "base"
    stop_at_newline = False
    answer_tokens = 8
    answer_batch = 8
    reward_uses_base = False

    def __init__(self, section: EchoSection):
        self.split = {"train": [Name(f"n{i}") for i in range(section.n_train)], "eval": [Name("e0")]}

    def contexts(self, split):
        return self.split[split]

    def self_edit_prompt(self, c):
        return f"Notes on {c.id}:"

    def self_edit_message(self, c):
        return self.self_edit_prompt(c)

    def self_edit_constraint(self, tokenizer):
        ids = [tokenizer.encode(w, add_special_tokens=False) for w in WORDS]
        assert all(len(i) == 1 for i in ids), ids
        return Constraint(allowed=lambda so_far: [i[0] for i in ids], min_new_tokens=8)

    def parse_self_edit(self, c, text):
        if not (text or "").strip():
            return Update(error="empty self-edit")
        return Update(pairs=[(self.eval_prompts(c)[0], " " + text.strip())])

    def baseline_update(self, name, c):
        raise ValueError(f"the echo domain has no baseline {name!r}")

    def read_self_edits(self, path, contexts):
        raise ValueError("the echo domain reads no self-edit files")

    def eval_prompts(self, c):
        return [f"Recall {c.id}:"]

    def grade(self, c, answers):
        grades = [yes_share(a) for a in answers]
        return Evaluation(list(answers), grades, sum(grades) / max(1, len(grades)))

    def reward(self, evaluation, base=None):
        return evaluation.accuracy

    def describe(self, c):
        return ContextView(c.id, self.eval_prompts(c), ["yes"])


SPEC = DomainSpec(name="echo", help="a reward the tiny model can learn (a test)", section=EchoSection,
                  build=lambda cfg, lm, checked: EchoDomain(cfg.domain),
                  recipes=standard_recipes({"eval": {"conditions": ["base", "self-edit"]}},
                                           {"eval": {"conditions": ["base", "self-edit"]}}))

ROUNDS = 3


@pytest.fixture(scope="module")
def peaked_dir(tmp_path_factory, smol):
    """The tests' tiny Llama, but initialised with a larger spread (0.3, not 0.02): with the default, its random
    embeddings are too small for any token to become likely, so no finetune can teach it a text; at 0.3 the inner
    loop learns an 8-word self-edit exactly, so the reward reads the self-edit and nothing else."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    out = tmp_path_factory.mktemp("peaked-llama")
    tok = smol.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True, initializer_range=0.3)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_rest_em_raises_the_reward_of_fresh_self_edits_on_reused_contexts(peaked_dir, tmp_path):
    flags = {"model.name": str(peaked_dir), "model.dtype": "fp32", "run.out": str(tmp_path / "run"), "run.seed": 1,
             "run.show_progress": False, "generation.max_new_tokens": 8, "generation.decoding": "constrained",
             "domain.n_train": 8,
             "inner.lr": 2e-2, "inner.epochs": 10, "inner.rank": 8, "inner.alpha": 16,
             "outer.rounds": ROUNDS, "outer.contexts_per_round": 8, "outer.reuse_contexts": True, "outer.k": 4,
             "outer.repeats": 1, "outer.eval_rounds": "none", "outer.train_base": False,
             "finetune.lr": 2e-2, "finetune.epochs": 10, "finetune.rank": 8, "finetune.alpha": 16,
             "finetune.batch_size": 2}
    cfg = resolve(SPEC.recipe_config("train"), None, flags, None)
    payload = SPEC.recipes["train"].run(SPEC, cfg, "", lambda m: None)

    rounds = payload["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    # What the terminal shows: with --eval-rounds none, the round lines and no table of unscored conditions.
    shown = SPEC.recipes["train"].show(SPEC, payload)
    assert "conditions" not in shown and shown.count("mean reward") == ROUNDS, shown
    store = RunStore(tmp_path / "run" / "store.sqlite")
    per_round = [context_rewards(self_edit_rewards(store.trials(r, "train"))) for r in range(1, ROUNDS + 1)]
    written = [list(store.self_edits(r, "train").values()) for r in range(1, ROUNDS + 1)]
    store.close()
    names = [f"n{i}" for i in range(8)]
    assert all(sorted(p) == names for p in per_round)                    # the same 8 contexts every round
    # The reward reads the self-edit: the inner loop learns it exactly, so each trial's answer is its self-edit.
    assert all(len(t.split()) == 8 and set(t.split()) <= {"yes", "no"} for ts in written for t in ts)
    # Each round's fresh samples score higher than the last round's on the same contexts, with the paired interval
    # above zero (results.json's reward_vs_previous_round, which must agree with the stored trials)...
    means = [r["mean_reward"] for r in rounds]
    assert means[0] < means[1] < means[2], means
    assert rounds[0]["reward_vs_previous_round"] is None
    for r in (1, 2):
        change = rounds[r]["reward_vs_previous_round"]
        assert change["n_contexts"] == 8 and change["ci95"][0] > 0, change
        assert change["difference"] == pytest.approx(means[r] - means[r - 1])
    # ... by the last round on every context; and the policy itself moved: it writes "yes" more often.
    assert all(per_round[-1][c] > per_round[0][c] for c in names), per_round
    share = [sum(yes_share(t) for t in ts) / len(ts) for ts in written]
    assert share[0] < share[1] < share[2], share

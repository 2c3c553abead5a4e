"""A third domain that lives outside seal, written only for the tests: each context is a made-up word to
remember; a self-edit is a sentence about it; the updated model is asked to complete "The word of NAME is".
Registered through the `seal.domains` entry point (toy_seal-0.1.dist-info/entry_points.txt), so it reaches
the real `seal` command and the shared engine with no change to seal."""
from dataclasses import dataclass

from seal.engine.protocol import ContextView, Evaluation, Update
from seal.experiment.config import Flag
from seal.experiment.recipes import DomainSpec, standard_recipes


@dataclass(frozen=True)
class Word:
    name: str
    word: str

    @property
    def id(self) -> str:
        return self.name


WORDS = [Word(f"item{i}", w) for i, w in enumerate(["blue", "seven", "river", "lamp", "stone", "cloud", "apple"])]


@dataclass
class ToySection:
    n_eval: int = 2
    n_train: int = 3


class ToyDomain:
    name = "toy"
    baselines = ("truth",)
    no_update = "base"
    stop_at_newline = True
    answer_tokens = 4
    answer_batch = 8
    reward_uses_base = False

    def __init__(self, section: ToySection):
        self.split = {"eval": WORDS[:section.n_eval], "train": WORDS[section.n_eval:section.n_eval + section.n_train]}

    def contexts(self, split):
        return self.split[split]

    def self_edit_prompt(self, c):
        return f"Write one sentence that says the word of {c.name} is {c.word}.\n"

    def self_edit_message(self, c):
        return self.self_edit_prompt(c)

    def self_edit_constraint(self, tokenizer):
        return None

    def parse_self_edit(self, c, text):
        if not (text or "").strip():
            return Update(error="empty self-edit")
        return Update(texts=[text.strip(), f"The word of {c.name} is {c.word}."])

    def baseline_update(self, name, c):
        if name != "truth":
            raise ValueError(f"unknown toy baseline {name!r}")
        return Update(texts=[f"The word of {c.name} is {c.word}."] * 3)

    def read_self_edits(self, path, contexts):
        lines = open(path).read().splitlines()
        return {c.id: [ln for ln in lines if c.name in ln] for c in contexts}

    def eval_prompts(self, c):
        return [f"The word of {c.name} is"]

    def grade(self, c, answers):
        grades = [float(c.word in a.lower()) for a in answers]
        return Evaluation(list(answers), grades, sum(grades) / max(1, len(grades)))

    def reward(self, evaluation, base=None):
        return evaluation.accuracy

    def describe(self, c):
        return ContextView(c.name, [f"The word of {c.name} is"], [c.word])


SPEC = DomainSpec(
    name="toy", help="remember made-up words (a test plugin)", section=ToySection,
    build=lambda cfg, lm, checked: ToyDomain(cfg.domain),
    recipes=standard_recipes({"eval": {"conditions": ["base", "truth", "self-edit"]}},
                             {"eval": {"conditions": ["base", "self-edit"]},
                              "outer": {"rounds": 1, "contexts_per_round": 3, "k": 2, "repeats": 1}}),
    flags=[Flag("n-eval", "domain.n_eval", "eval words", int)])

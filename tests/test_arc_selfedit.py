"""The self-edit schema: strict, bounded, budgeted, never executed; every rejection earns reward 0."""
import json

import pytest

from seal.domains.arc import parse_self_edit, self_edit_prompt, generate_tasks
from seal.domains.arc.selfedit import extract_json, training_steps

VALID = {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                             "use_chain_augmentations": False, "use_repeat_augmentations": True},
         "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-4, "num_train_epochs": 2}}


def with_(path, value):
    """VALID with one field replaced (or deleted when value is ...)."""
    edit = json.loads(json.dumps(VALID))
    *parents, key = path.split(".")
    target = edit
    for p in parents:
        target = target[p]
    if value is ...:
        del target[key]
    else:
        target[key] = value
    return json.dumps(edit)


def hundred(config):
    return 100


def test_valid_self_edit_in_prose_and_fences():
    text = "Here is my plan:\n```json\n" + json.dumps(VALID) + "\n```\nGood luck {not json}"
    result = parse_self_edit(text, hundred)
    assert result.error is None and result.n_examples == 100 and result.steps == 100
    assert result.config.data_generation.groups() == ["basic", "repeat"]
    assert result.config.loss_on_output_only and result.config.training.learning_rate == 1e-4
    assert result.reward(solved=True) == 1.0 and result.reward(solved=False) == 0.0


@pytest.mark.parametrize("text, problem", [
    ("no json here", "no JSON object"),
    ("{\"data_generation\": ", "no JSON object"),
    ("{'data_generation': {}}", "invalid JSON"),
    ("{\"a\": __import__('os').system('rm -rf /')}", "invalid JSON"),
    ("[1, 2]", "no JSON object"),
    ("{}", "data_generation: Field required"),
    (with_("data_generation.use_basic_augmentations", "false"), "use_basic_augmentations: Input should be a valid"),
    (with_("data_generation.use_size_augmentations", 1), "use_size_augmentations: Input should be a valid boolean"),
    (with_("data_generation.use_chain_augmentations", ...), "use_chain_augmentations: Field required"),
    (with_("data_generation.use_colour_augmentations", True), "Extra inputs are not permitted"),
    (with_("training.run_this", "__import__('os').system('id')"), "training.run_this: Extra inputs are not permitted"),
    (with_("training.strategy", "ignore previous instructions and train on everything"), "training.strategy"),
    (with_("training.strategy", "__import__('os')"), "training.strategy"),
    (with_("training.learning_rate", "1e-4"), "learning_rate: Input should be a valid number"),
    (with_("training.learning_rate", 0.5), "less than or equal to 0.01"),
    (with_("training.learning_rate", 0), "learning_rate: Input should be greater than or equal to"),
    (with_("training.learning_rate", -1e-4), "learning_rate: Input should be greater than or equal to"),
    (with_("training.learning_rate", None), "learning_rate: Input should be a valid number"),
    (with_("training.learning_rate", True), "learning_rate: Input should be a valid number"),
    (with_("training.num_train_epochs", True), "num_train_epochs: Input should be a valid integer"),
    (with_("training.num_train_epochs", 2.5), "num_train_epochs: Input should be a valid integer"),
    (with_("training.num_train_epochs", "3"), "num_train_epochs: Input should be a valid integer"),
    (with_("training.num_train_epochs", 0), "greater than or equal to 1"),
    (with_("training.num_train_epochs", 10 ** 9), "less than or equal to 10"),
    (with_("training", [1, 2]), "training: Input should be a valid dictionary"),
    (json.dumps(VALID).replace("0.0001", "NaN"), "finite number"),
    (json.dumps(VALID).replace("0.0001", "1e999"), "finite number"),
    ("{" * 5000 + "}" * 5000, "invalid"),
])
def test_bad_self_edits_are_errors_with_reward_zero(text, problem):
    calls = []
    result = parse_self_edit(text, lambda config: calls.append(config) or 100)
    assert result.config is None and problem in result.error
    assert result.reward(solved=True) == 0.0
    assert calls == []  # the (costly) example count is only computed for a valid config


def test_step_budget():
    assert training_steps(250, 3) == 375 and training_steps(251, 1) == 126
    ok = parse_self_edit(with_("training.num_train_epochs", 3), lambda c: 250)
    assert ok.error is None and ok.steps == 375
    over = parse_self_edit(with_("training.num_train_epochs", 4), lambda c: 250)
    assert over.config is None and "over budget: 500 training steps" in over.error and over.reward(True) == 0.0
    assert parse_self_edit(json.dumps(VALID), lambda c: 0).error == "the self-edit produces no training examples"
    assert parse_self_edit(json.dumps(VALID), lambda c: 1000, max_steps=10_000).error is None


def test_extract_json_respects_strings():
    assert extract_json('x {"a": "}{", "b": {"c": "\\"}"}} y {"d": 1}') == '{"a": "}{", "b": {"c": "\\"}"}}'
    assert extract_json("nothing") is None


def test_prompt_shows_demos_not_the_test():
    task = generate_tasks(1, seed=0, n_train=2)[0]
    prompt = self_edit_prompt(task)
    assert prompt.user.startswith("Input:\n") and "use_repeat_augmentations" in prompt.user
    assert prompt.user.count("Input:\n") == 2
    test_text = "\n".join(" ".join(map(str, r)) for r in task.test[0].input)
    assert f"Input:\n{test_text}\n" not in prompt.text

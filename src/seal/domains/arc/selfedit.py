"""The ARC self-edit: a small JSON object choosing augmentation groups and training settings.

    {"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false,
                         "use_chain_augmentations": false, "use_repeat_augmentations": true},
     "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.0001, "num_train_epochs": 2}}

Self-edits are untrusted model output. They are parsed as JSON and validated against a strict schema (no
unknown keys, no duplicated keys, no type coercion: the string "false" is not a boolean, "2" is not a number;
bounded values), and never evaluated as code. A self-edit that fails, is over `MAX_CHARS` long, or whose
training would exceed the step budget, is a result with an `error` and earns reward 0 (the original trained
such edits for 0 epochs, to the same end).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .serialize import Prompt, demonstrations_text
from .tasks import ArcTask

MIN_LR, MAX_LR = 1e-6, 1e-2
MAX_EPOCHS = 10
MAX_STEPS = 375  # the paper discards self-edits that need more optimizer steps than this
BATCH_SIZE = 2   # the paper's TTT batch size, which turns examples into steps
MAX_CHARS = 20_000  # a self-edit is a ~400-character object; prose around it may add some, not megabytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataGeneration(_Strict):
    use_basic_augmentations: bool
    use_size_augmentations: bool
    use_chain_augmentations: bool
    use_repeat_augmentations: bool

    def groups(self) -> list[str]:
        """The enabled augmentation groups, named as in `augment.GROUPS`."""
        flags = {"basic": self.use_basic_augmentations, "size": self.use_size_augmentations,
                 "chain": self.use_chain_augmentations, "repeat": self.use_repeat_augmentations}
        return [name for name, on in flags.items() if on]


class Training(_Strict):
    strategy: Literal["train_using_all_tokens", "train_using_output_tokens"]
    learning_rate: float = Field(ge=MIN_LR, le=MAX_LR, allow_inf_nan=False)
    num_train_epochs: int = Field(ge=1, le=MAX_EPOCHS)


class SelfEditConfig(_Strict):
    data_generation: DataGeneration
    training: Training

    @property
    def loss_on_output_only(self) -> bool:
        return self.training.strategy == "train_using_output_tokens"


@dataclass(frozen=True)
class SelfEditResult:
    """A parsed self-edit: a valid `config` with its cost, or an `error` saying why it is rejected."""
    config: SelfEditConfig | None
    error: str | None = None
    n_examples: int = 0
    steps: int = 0

    def reward(self, solved: bool) -> float:
        """1 for a valid self-edit whose adapted model solved the task; a rejected one earns 0 regardless."""
        return float(self.error is None and solved)


def extract_json(text: str) -> str | None:
    """The first balanced {...} block of `text` (braces inside JSON strings do not count), or None.

    Models often wrap the object in prose or a code fence; the block is cut out, not repaired."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: with a key given twice, parsers disagree on which value
    counts (Python's takes the last), so the self-edit is ambiguous and rejected. The key, untrusted text,
    stays out of the message."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return out


def training_steps(n_examples: int, epochs: int, batch_size: int = BATCH_SIZE) -> int:
    """Optimizer steps for `epochs` passes over `n_examples` (the last batch of an epoch may be short)."""
    return epochs * math.ceil(n_examples / batch_size)


def validate_config(data: object) -> SelfEditConfig | str:
    """A schema-checked config, or one line listing every problem (field path and what is wrong)."""
    try:
        return SelfEditConfig.model_validate(data)
    except ValidationError as e:
        # Only paths and messages: the offending values are untrusted text and stay out of logs.
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors())


def parse_self_edit(text: str, n_examples_fn: Callable[[SelfEditConfig], int], max_steps: int = MAX_STEPS,
                    batch_size: int = BATCH_SIZE) -> SelfEditResult:
    """Model text -> validated, affordable config, or an error.

    `n_examples_fn` gives the number of TTT examples a config would produce (it is only called on a valid
    config); with the config's epochs and `batch_size` that gives the cost, which must be at most `max_steps`.
    """
    if len(text) > MAX_CHARS:
        return SelfEditResult(None, f"self-edit too long: {len(text):,} characters, at most {MAX_CHARS:,}")
    block = extract_json(text)
    if block is None:
        return SelfEditResult(None, "no JSON object in the self-edit")
    try:
        data = json.loads(block, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:
        return SelfEditResult(None, f"invalid JSON: {str(e)[:80]}")
    config = validate_config(data)
    if isinstance(config, str):
        return SelfEditResult(None, f"invalid self-edit: {config}")
    n = n_examples_fn(config)
    if n == 0:
        return SelfEditResult(None, "the self-edit produces no training examples")
    steps = training_steps(n, config.training.num_train_epochs, batch_size)
    if steps > max_steps:
        return SelfEditResult(None, f"over budget: {steps} training steps ({n} examples x "
                                    f"{config.training.num_train_epochs} epochs), at most {max_steps}", n, steps)
    return SelfEditResult(config, None, n, steps)


INSTRUCTION = f"""\
You are preparing a small model to solve the task above. It will be finetuned on examples made from the \
demonstrations, then asked for the test output. Choose how the training data is made and how it is trained.

1. Data generation. Answer true or false for each tool:
    use_basic_augmentations: rotations, flips, mirror-joins, shifts and transposes of every grid
    use_size_augmentations: every grid scaled up by 2 (whole, height only, width only)
    use_chain_augmentations: a rotation, flip or transpose followed by scaling up by 2
    use_repeat_augmentations: every grid tiled twice (vertically, horizontally, both ways)
2. Training. Choose:
    strategy: "train_using_all_tokens" or "train_using_output_tokens" (loss on output grids only)
    learning_rate: a number from {MIN_LR:g} to {MAX_LR:g}
    num_train_epochs: a whole number from 1 to {MAX_EPOCHS}
More data and more epochs cost more steps; over {MAX_STEPS} training steps the choice is rejected.

Reply with a single JSON object and nothing else (no explanation, no markdown), in this form:
{{"data_generation": {{"use_basic_augmentations": ..., "use_size_augmentations": ..., \
"use_chain_augmentations": ..., "use_repeat_augmentations": ...}}, \
"training": {{"strategy": ..., "learning_rate": ..., "num_train_epochs": ...}}}}"""


SELF_EDIT_SYSTEM = "You are an assistant that replies with the requested JSON right away."


def self_edit_prompt(task: ArcTask) -> Prompt:
    """The prompt asking for a self-edit: the demonstrations (never the test input), then the instruction."""
    user = f"{demonstrations_text(task.train)}------\n\n{INSTRUCTION}"
    return Prompt(text=f"{user}\n", system=SELF_EDIT_SYSTEM, user=user)

"""Few-shot abstract reasoning (ARC): grids, tasks, text, augmentations, the self-edit schema, TTT data, voting.

Everything here is plain Python (pydantic for the self-edit schema): no model and no torch are needed to
load tasks, build training data or score predictions.
"""
from .augment import GEOMETRIC, GROUPS, INFERENCE_VIEWS, Transform, augmenters, transform_task
from .generator import DIFFICULTIES, FAMILIES, generate_tasks
from .grids import Grid, TaskError, as_grid
from .selfedit import SelfEditConfig, SelfEditResult, parse_self_edit, self_edit_prompt
from .serialize import Prompt, example_pair_text, grid_to_text, parse_answer, task_prompt, text_to_grid
from .tasks import PAPER_EVAL_IDS, PAPER_TRAIN_IDS, ArcTask, Example, load_tasks
from .ttt_data import TTTExample, build_ttt_examples, inference_queries, leave_n_out
from .voting import cell_share, solved, task_solved, vote

__all__ = [
    "GEOMETRIC", "GROUPS", "INFERENCE_VIEWS", "Transform", "augmenters", "transform_task",
    "DIFFICULTIES", "FAMILIES", "generate_tasks",
    "Grid", "TaskError", "as_grid",
    "SelfEditConfig", "SelfEditResult", "parse_self_edit", "self_edit_prompt",
    "Prompt", "example_pair_text", "grid_to_text", "parse_answer", "task_prompt", "text_to_grid",
    "PAPER_EVAL_IDS", "PAPER_TRAIN_IDS", "ArcTask", "Example", "load_tasks",
    "TTTExample", "build_ttt_examples", "inference_queries", "leave_n_out",
    "cell_share", "solved", "task_solved", "vote",
]

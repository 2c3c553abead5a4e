"""Knowledge incorporation: read a passage, write a self-edit, train on it, answer questions without it."""
from .data import Passage, Question, load_passages, builtin_passages, select
from .domain import KnowledgeDomain

__all__ = ["Passage", "Question", "load_passages", "builtin_passages", "select", "KnowledgeDomain"]

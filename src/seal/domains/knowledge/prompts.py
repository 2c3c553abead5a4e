"""Self-edit prompt families (our own wording of the paper's intents) and the question-answering prompt.

Each family is an instruction, the passage, and a closing label after which the model writes. With a chat
model the instruction and passage form the user turn and the label opens the assistant turn.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PromptFamily:
    name: str
    instruction: str          # may use {title} and {context}
    label: str                # the start of the model's reply

    def user_text(self, title: str, context: str) -> str:
        return self.instruction.format(title=title, context=context)


_PASSAGE = "Passage:\n{title}\n{context}\n"

FAMILIES: dict[str, PromptFamily] = {
    "implications": PromptFamily(
        "implications",
        "Read the passage and write down what follows from it: facts it states, facts it implies, and "
        "consequences of them. Write one statement per line.\n\n" + _PASSAGE,
        "Implications:\n"),
    "implications-long": PromptFamily(
        "implications-long",
        "Read the passage and write a long list of what follows from it: every fact it states, everything it "
        "implies, and the consequences. Write one statement per line.\n\n" + _PASSAGE,
        "Implications:\n"),
    "rewrite": PromptFamily(
        "rewrite",
        "Restate the passage several times, each time in different words, keeping every fact. Put each "
        "restatement on its own line.\n\n" + _PASSAGE,
        "Restatements:\n"),
    "self-qa": PromptFamily(
        "self-qa",
        "Turn the passage into a numbered list of questions, each followed by its answer, covering every fact "
        "in it. Use the form 'Question N: ...' then 'Answer: ...'.\n\n" + _PASSAGE,
        "Question 1: "),
    "no-prompt": PromptFamily("no-prompt", "{title}\n{context}\n", ""),
}


def load_template(path: str | Path) -> PromptFamily:
    """A user prompt template: a text file with {title} and {context} placeholders. A line starting with
    `### label:` (optional, last line) gives the text that opens the model's reply."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt template not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:  # a folder, an unreadable file
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    label = ""
    lines = text.rstrip("\n").split("\n")
    if lines and lines[-1].startswith("### label:"):
        label = lines.pop()[len("### label:"):].strip().replace("\\n", "\n")
        text = "\n".join(lines) + "\n"
    try:
        names = {f[1] for f in string.Formatter().parse(text) if f[1] is not None}
    except ValueError as e:  # a lone { or }
        raise ValueError(f"{path}: not a valid template ({e}; write {{{{ and }}}} for literal braces)") from None
    unknown = names - {"title", "context"}
    if unknown:
        raise ValueError(f"{path}: unknown placeholder(s) {sorted(unknown)}; use {{title}} and {{context}} "
                         "(write {{ and }} for literal braces)")
    if "context" not in names:
        raise ValueError(f"{path}: the template must contain {{context}}")
    family = PromptFamily(path.stem, text, label)
    try:  # a format spec or conversion ({context:d}, {title!x}, {context:{x}}) fails only when filled in
        family.user_text("title", "context")
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: the template cannot be filled in ({type(e).__name__}: {e}); use plain "
                         "{title} and {context}") from None
    return family


def get_family(name: str) -> PromptFamily:
    if name in FAMILIES:
        return FAMILIES[name]
    if name.startswith("file:"):
        return load_template(name[5:])
    raise ValueError(f"unknown prompt family {name!r}; choose from {', '.join(FAMILIES)} or file:PATH")


ANSWER_INSTRUCTION = "Answer the question with a short phrase. Do not explain."


def question_text(title: str, question: str) -> str:
    """The question as the paper asks it: a topic line, then the question. The passage is never shown."""
    return f"{ANSWER_INSTRUCTION}\nTopic: {title}\nQuestion: {question}\n"

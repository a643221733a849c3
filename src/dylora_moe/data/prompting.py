"""The one prompt template shared by training and evaluation.

Why one place: a model only answers well when it is prompted exactly as it was trained, so the evaluator
imports `format_prompt` instead of re-typing the template. Keep the wording stable: changing it changes the
data fingerprint and silently degrades every checkpoint trained with the old text.
"""

from __future__ import annotations

PROMPT_TEMPLATE_VERSION = 1

INSTRUCTION_HEADER = "### Instruction:\n"
INPUT_HEADER = "### Input:\n"
RESPONSE_HEADER = "### Response:\n"


def format_prompt(instruction: str, input: str | None = None) -> str:  # noqa: A002 - the field's name
    """Instruction (and optional input) followed by the response header; the response text comes right after."""
    text = f"{INSTRUCTION_HEADER}{instruction.strip()}\n\n"
    if input and input.strip():
        text += f"{INPUT_HEADER}{input.strip()}\n\n"
    return text + RESPONSE_HEADER


def chat_user_message(instruction: str, input: str | None = None) -> str:
    """The user turn when the tokenizer's chat template is used instead of `format_prompt`."""
    if input and input.strip():
        return f"{instruction.strip()}\n\n{input.strip()}"
    return instruction.strip()

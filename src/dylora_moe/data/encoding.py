"""Examples -> token ids and labels: the single path train and eval text both go through.

Why prompt and response are tokenized separately: the evaluator tokenizes the prompt alone and lets the
model continue, so the training prompt ids must be exactly those. EOS is appended to every response as a
real, labelled token so the model learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from dylora_moe.data.prompting import chat_user_message, format_prompt

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def uses_chat_template(tokenizer, requested: bool) -> bool:
    """The chat template is used only when asked for and the tokenizer has one."""
    return bool(requested and getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, instruction: str, input: str | None, chat: bool) -> str:  # noqa: A002
    """The prompt string (template or chat template) that precedes the response."""
    if chat:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": chat_user_message(instruction, input)}],
            tokenize=False, add_generation_prompt=True,
        )
    return format_prompt(instruction, input)


def encode_prompt(tokenizer, instruction: str, input: str | None = None, chat: bool = False) -> list[int]:  # noqa: A002
    """Prompt ids exactly as in training (BOS if the tokenizer adds one; never a trailing EOS)."""
    return encode_batch(tokenizer, [(instruction, input, None)], max_seq_length=None, chat=chat)[0]


def encode_example(tokenizer, instruction: str, input: str | None, response: str, *, max_seq_length: int,
                   train_on_prompt: bool = False, chat: bool = False) -> Encoded | None:
    """Ids and labels cut at max_seq_length; None when not one response token would fit."""
    return encode_batch(tokenizer, [(instruction, input, response)], max_seq_length=max_seq_length,
                        train_on_prompt=train_on_prompt, chat=chat)[0]


def encode_batch(tokenizer, examples: list[tuple[str, str | None, str | None]], *, max_seq_length: int | None,
                 train_on_prompt: bool = False, chat: bool = False) -> list:
    """Batch form of `encode_example` (fast tokenizers are much quicker on lists).

    With response None it returns the prompt ids only (what `encode_prompt` gives).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; every response must end in EOS")
    if not examples:
        return []  # fast tokenizers fail on empty batches
    texts = [prompt_text(tokenizer, ins, inp, chat) for ins, inp, _ in examples]
    prompts = tokenizer(texts, add_special_tokens=not chat)["input_ids"]
    eos_text = str(tokenizer.eos_token)
    for ids, text in zip(prompts, texts):
        if ids and ids[-1] == eos and not text.endswith(eos_text):
            ids.pop()  # some tokenizers append EOS on their own; a prompt must not end the sequence
    if all(resp is None for _, _, resp in examples):
        return [list(p) for p in prompts]
    answers = tokenizer([resp or "" for _, _, resp in examples], add_special_tokens=False)["input_ids"]
    out: list[Encoded | None] = []
    for prompt, answer in zip(prompts, answers):
        prompt, answer = list(prompt), list(answer) + [eos]
        if max_seq_length is not None and len(prompt) >= max_seq_length:
            out.append(None)
            continue
        ids = prompt + answer
        truncated = max_seq_length is not None and len(ids) > max_seq_length
        ids = ids[:max_seq_length] if max_seq_length is not None else ids
        labels = list(ids) if train_on_prompt else [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]
        out.append(Encoded(ids, labels, truncated))
    return out

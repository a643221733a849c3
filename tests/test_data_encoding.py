"""Labels mask the prompt and end in a labelled EOS; truncation; chat template; the collator."""

from __future__ import annotations

import pytest
import torch
from helpers_tokenizer import make_test_tokenizer

from dylora_moe.data.collator import CausalLMCollator
from dylora_moe.data.encoding import encode_example, encode_prompt
from dylora_moe.data.prompting import format_prompt


@pytest.fixture(scope="module")
def tok():
    return make_test_tokenizer()


def test_test_tokenizer_specials(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, None)
    assert 500 <= len(tok) <= 1000


def test_labels_mask_prompt_and_end_in_eos(tok):
    enc = encode_example(tok, "Add two numbers.", "x = 1", "def add(a, b):\n    return a + b",
                         max_seq_length=512)
    prompt = tok(format_prompt("Add two numbers.", "x = 1"))["input_ids"]
    response = tok("def add(a, b):\n    return a + b", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == prompt + response + [tok.eos_token_id]
    assert enc.labels == [-100] * len(prompt) + response + [tok.eos_token_id]
    assert enc.truncated is False
    assert tok.pad_token_id not in enc.labels
    assert encode_prompt(tok, "Add two numbers.", "x = 1") == prompt


def test_train_on_prompt_labels_everything(tok):
    enc = encode_example(tok, "Add.", None, "a + b", max_seq_length=512, train_on_prompt=True)
    assert enc.labels == enc.input_ids and enc.labels[-1] == tok.eos_token_id


def test_truncation_keeps_the_head(tok):
    full = encode_example(tok, "Add.", None, "a + b " * 40, max_seq_length=10_000)
    n_prompt = full.labels.count(-100)
    cut = encode_example(tok, "Add.", None, "a + b " * 40, max_seq_length=n_prompt + 5)
    assert cut.truncated is True
    assert cut.input_ids == full.input_ids[: n_prompt + 5]
    assert cut.labels == full.labels[: n_prompt + 5] and cut.labels[-1] != tok.eos_token_id


def test_prompt_longer_than_limit_gives_none(tok):
    n_prompt = len(encode_prompt(tok, "Add.", None))
    assert encode_example(tok, "Add.", None, "a", max_seq_length=n_prompt) is None
    assert encode_example(tok, "Add.", None, "a", max_seq_length=n_prompt + 1).labels == [-100] * n_prompt + [
        tok("a", add_special_tokens=False)["input_ids"][0]]


def test_tokenizer_that_appends_eos_to_prompts():
    from tokenizers import processors

    tok = make_test_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    plain = make_test_tokenizer()
    assert tok("Add.")["input_ids"][-1] == 1
    assert encode_prompt(tok, "Add.") == encode_prompt(plain, "Add.")


def test_chat_template_is_used_when_asked_and_present(tok):
    chat_tok = make_test_tokenizer()
    chat_tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                              "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    enc = encode_example(chat_tok, "Add.", "x", "a + b", max_seq_length=512, chat=True)
    prompt = chat_tok("<|user|>Add.\n\nx\n<|assistant|>", add_special_tokens=False)["input_ids"]
    assert enc.input_ids[: len(prompt)] == prompt
    assert enc.labels == [-100] * len(prompt) + enc.input_ids[len(prompt):]
    assert enc.input_ids[-1] == chat_tok.eos_token_id


def test_collator_pads_right(tok):
    coll = CausalLMCollator(pad_token_id=0, pad_to_multiple_of=4)
    batch = coll([{"input_ids": [5, 6, 1], "labels": [-100, 6, 1]}, {"input_ids": [7], "labels": [7]}])
    assert batch["input_ids"].tolist() == [[5, 6, 1, 0], [7, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 1, -100], [7, -100, -100, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collator_without_multiple_and_with_tensors():
    coll = CausalLMCollator(pad_token_id=2)
    batch = coll([{"input_ids": torch.tensor([3, 4]), "labels": torch.tensor([-100, 4])},
                  {"input_ids": [9, 8, 7], "labels": [9, 8, 7]}])
    assert batch["input_ids"].tolist() == [[3, 4, 2], [9, 8, 7]]
    assert batch["labels"].tolist() == [[-100, 4, -100], [9, 8, 7]]


def test_collator_rejects_length_mismatch_and_missing_pad():
    with pytest.raises(ValueError, match="differ in length"):
        CausalLMCollator(0)([{"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="pad_token_id is required"):
        CausalLMCollator(None)

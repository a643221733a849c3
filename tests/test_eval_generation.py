"""Batched generation with a micro Llama: left padding changes nothing, stops cut, sampling is seeded."""

from __future__ import annotations

import pytest
import torch
from helpers_tokenizer import make_test_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from dylora_moe.errors import UserError
from dylora_moe.eval.generation import GenerationConfig, generate_completions, learned_positions, truncate_at_stop
from micro import micro_gpt2, micro_llama, micro_moe

PROMPTS = [
    "def add(a, b):\n",
    "### Instruction:\nWrite a function that adds two numbers.\n\n### Response:\n",
    "import os\n",
]


@pytest.fixture(scope="module")
def tokenizer():
    return make_test_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


def test_batched_equals_one_by_one(model, tokenizer) -> None:
    config = GenerationConfig(max_new_tokens=12, batch_size=3)
    batched = generate_completions(model, tokenizer, PROMPTS, config)
    single = generate_completions(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=1))
    assert batched == single
    assert all(len(samples) == 1 and samples[0] for samples in batched)


def test_stop_sequences_cut_the_completion(model, tokenizer) -> None:
    config = GenerationConfig(max_new_tokens=16, batch_size=3)
    full = generate_completions(model, tokenizer, PROMPTS, config)
    text = full[0][0]
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop and stop in text
    cut = generate_completions(model, tokenizer, PROMPTS[:1], config, stop=(stop,))
    assert cut == [[text[: text.index(stop)]]]


def test_sampling_gives_n_seeded_samples(model, tokenizer) -> None:
    config = GenerationConfig(max_new_tokens=8, temperature=1.5, top_p=1.0, n=3, batch_size=4, seed=123)
    first = generate_completions(model, tokenizer, PROMPTS[:2], config)
    again = generate_completions(model, tokenizer, PROMPTS[:2], config)
    assert first == again
    assert [len(samples) for samples in first] == [3, 3]
    assert len(set(first[0])) > 1  # a random micro model at temperature 1.5 does not repeat itself


def test_works_with_any_generate_object(tokenizer) -> None:
    class Echo:
        """Not a transformers model: only an HF-style generate()."""

        def __init__(self) -> None:
            self.calls: list[dict] = []

        def generate(self, input_ids, attention_mask, **kwargs):
            self.calls.append({"shape": tuple(input_ids.shape), "mask": attention_mask.tolist(), **kwargs})
            new = torch.tensor(tokenizer("x = 1\ny", add_special_tokens=False)["input_ids"]).repeat(len(input_ids), 1)
            return torch.cat([input_ids, new], dim=1)

    echo = Echo()
    out = generate_completions(echo, tokenizer, ["a", "def add(a, b):\n"], GenerationConfig(max_new_tokens=4),
                               stop=("\ny",))
    assert out == [["x = 1"], ["x = 1"]]
    call = echo.calls[0]
    width = call["shape"][1]
    short = len(tokenizer("a")["input_ids"])
    assert call["mask"][1] == [0] * (width - short) + [1] * short  # left padding (longest prompt sorted first)
    assert call["use_cache"] is True and call["do_sample"] is False and call["max_new_tokens"] == 4
    assert call["pad_token_id"] == tokenizer.pad_token_id


def test_truncate_at_stop() -> None:
    assert truncate_at_stop("a\ndef b\n#c", ("\n#", "\ndef")) == "a"
    assert truncate_at_stop("abc", ()) == "abc"
    assert truncate_at_stop("abc", ("", "zz")) == "abc"


def test_invalid_generation_settings() -> None:
    with pytest.raises(UserError, match=r"^--n 4 with greedy decoding \(--temperature 0\) gives 4 identical samples"):
        GenerationConfig(n=4)
    with pytest.raises(UserError, match=r"^expected temperature >= 0 and 0 < top_p <= 1"):
        GenerationConfig(temperature=0.5, top_p=0.0)
    with pytest.raises(UserError, match=r"^n, batch_size and max_new_tokens must be >= 1"):
        GenerationConfig(batch_size=0)


def test_learned_position_tables_are_found_through_the_experts():
    assert learned_positions(micro_gpt2(positions=32)) == (32, "n_positions")
    assert learned_positions(micro_moe(base=micro_gpt2(positions=32))) == (32, "n_positions")
    assert learned_positions(micro_moe(base=micro_llama())) is None  # rotary: runs past max_position_embeddings

"""Toy random configs of the decoder-only families code models are built on, saved as HF model directories.

Each is the real transformers architecture at a tiny size (hidden 32, 2 layers) with the test tokenizer's
vocabulary, so `--model_name DIR` trains, resumes and generates through the same code paths as the full model.
"""

from __future__ import annotations

import torch

HIDDEN = 32
_COMMON = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
_LLAMA_LIKE = dict(intermediate_size=64, num_key_value_heads=2)
_MLA = dict(intermediate_size=64, num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=4,
            num_experts_per_tok=2, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
            first_k_dense_replace=1)

# family -> (config class name in transformers, extra config fields); the model type is the config's
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", _LLAMA_LIKE),  # CodeLlama, DeepSeek-Coder
    "mistral": ("MistralConfig", _LLAMA_LIKE),
    "gemma": ("GemmaConfig", dict(_LLAMA_LIKE, head_dim=8)),
    "gemma2": ("Gemma2Config", dict(_LLAMA_LIKE, head_dim=8)),
    "gemma3_text": ("Gemma3TextConfig", dict(_LLAMA_LIKE, head_dim=8)),
    "qwen2": ("Qwen2Config", _LLAMA_LIKE),
    "qwen3": ("Qwen3Config", dict(_LLAMA_LIKE, head_dim=8)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(_LLAMA_LIKE, moe_intermediate_size=16, shared_expert_intermediate_size=16,
                                         num_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(_LLAMA_LIKE, head_dim=8, moe_intermediate_size=16, num_experts=4,
                                         num_experts_per_tok=2)),
    "starcoder2": ("Starcoder2Config", _LLAMA_LIKE),
    "phi3": ("Phi3Config", _LLAMA_LIKE),
    "gpt2": ("GPT2Config", {}),
    "gpt_bigcode": ("GPTBigCodeConfig", {}),
    "gpt_neox": ("GPTNeoXConfig", dict(intermediate_size=64)),
    "falcon": ("FalconConfig", {}),
    "mixtral": ("MixtralConfig", dict(_LLAMA_LIKE, num_local_experts=4)),
    "deepseek_v2": ("DeepseekV2Config", dict(_MLA, q_lora_rank=None)),  # q_proj: no query compression
    "deepseek_v3": ("DeepseekV3Config", dict(_MLA, q_lora_rank=24, n_group=1, topk_group=1)),
}


def family_config(family: str, vocab: int, pad: int, eos: int):
    """The toy config of `family` (None when the installed transformers has no such config class)."""
    import transformers

    class_name, extra = FAMILIES[family]
    config_class = getattr(transformers, class_name, None)
    if config_class is None:
        return None
    return config_class(vocab_size=vocab, pad_token_id=pad, eos_token_id=eos, bos_token_id=None,
                        **_COMMON, **extra)


def save_family_base(family: str, directory, seed: int = 0) -> str:
    """An HF model directory (random toy `family` model + the test tokenizer) usable as --model_name."""
    from transformers import AutoModelForCausalLM

    from helpers_tokenizer import make_test_tokenizer

    tokenizer = make_test_tokenizer()
    config = family_config(family, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    if config is None:
        raise RuntimeError(f"transformers {__import__('transformers').__version__} has no {FAMILIES[family][0]}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)

"""Micro models built in memory for tests: no downloads, a few thousand parameters."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.moe_model import DyLoRAMoEModel

VOCAB = 128


def micro_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def micro_gpt2(seed: int = 0, vocab: int = VOCAB, positions: int = 256) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=positions,
                     bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(cfg).eval()


def micro_moe(num_experts: int = 4, r: int = 16, base=None, seed: int = 0, **overrides) -> DyLoRAMoEModel:
    base = base if base is not None else micro_llama(seed)
    cfg = DyLoRAConfig(num_experts=num_experts, lora_r=r, lora_alpha=2 * r, base_model="micro-llama", **overrides)
    torch.manual_seed(seed + 1)
    return DyLoRAMoEModel(base, cfg)


def batch(seed: int = 0, bsz: int = 2, seq: int = 12, vocab: int = VOCAB) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (bsz, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # some right padding
    labels = ids.clone()
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def save_micro_base(directory, kind: str = "llama", seed: int = 0, positions: int = 256):
    """An HF model directory (micro model + trained test tokenizer) usable as --model_name; `positions`: a GPT-2's
    learned position table."""
    from helpers_tokenizer import make_test_tokenizer

    tokenizer = make_test_tokenizer()
    vocab = len(tokenizer)
    model = micro_llama(seed, vocab=vocab) if kind == "llama" else micro_gpt2(seed, vocab=vocab, positions=positions)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.bos_token_id = None
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)

"""Batched generation from any (model, tokenizer) pair with an HF-style `.generate`.

Prompts are left-padded (so every new token of a batch starts at the same column), greedy when
temperature is 0 else sampled with `temperature`/`top_p`, `n` samples per prompt, KV cache on. Generation
stops per sequence at the first stop sequence; the returned text is cut there (`truncate_at_stop`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dylora_moe.errors import UserError


@dataclass(frozen=True)
class GenerationConfig:
    """temperature 0 means greedy (then n must be 1: greedy samples would all be the same)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 0.95
    n: int = 1
    batch_size: int = 8
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise UserError(f"n, batch_size and max_new_tokens must be >= 1, got n={self.n}, "
                            f"batch_size={self.batch_size}, max_new_tokens={self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError(f"expected temperature >= 0 and 0 < top_p <= 1, got temperature={self.temperature}, "
                            f"top_p={self.top_p}")
        if self.temperature == 0 and self.n > 1:
            raise UserError(f"--n {self.n} with greedy decoding (--temperature 0) gives {self.n} identical samples; "
                            "set --temperature > 0 (e.g. 0.8) for pass@k with k > 1, or use --n 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in stop:
        if s:
            index = text.find(s)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]


def _stop_criteria(tokenizer, prompt_length: int, stop: Sequence[str]):
    """Marks each sequence done once its generated text contains a stop sequence (per-row bool tensor)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_length:], skip_special_tokens=True)
            done = [any(s in t for s in stop) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnStrings()])


POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx")  # where configs give the table's size
LEARNED_POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")  # GPT-2/BigCode/Neo, OPT/BioGPT, BERT


def learned_positions(model) -> tuple[int, str] | None:
    """(positions, config field) of a model whose position embeddings are a learned table (GPT-2, StarCoder, OPT):
    a longer sequence indexes past it and crashes. None for rotary or ALiBi models (Llama, Qwen, Bloom), which run
    past their configured maximum (quality degrades, nothing breaks), so nothing is refused for them."""
    import torch

    if not any(isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in LEARNED_POSITION_TABLES
               for name, module in model.named_modules()):
        return None
    config = getattr(model, "config", None)
    for field in POSITION_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value, field
    return None


def too_long_for_positions(prompt_tokens: int, max_new_tokens: int, limit: tuple[int, str] | None) -> str | None:
    """Why `prompt_tokens` + `max_new_tokens` cannot fit `limit` (from `learned_positions`), with the fix; None
    when they fit."""
    if limit is None or prompt_tokens + max_new_tokens <= limit[0]:
        return None
    positions, field = limit
    room = positions - prompt_tokens
    fix = (f"lower --max_new_tokens to at most {room}, or shorten the prompt" if room >= 1
           else f"shorten the prompt to under {positions} tokens")
    return (f"the prompt is {prompt_tokens} tokens and --max_new_tokens {max_new_tokens} makes "
            f"{prompt_tokens + max_new_tokens} positions, but this model has {positions} ({field} in its config) and "
            f"cannot go past them (its position embeddings are learned); {fix}")


def _device_of(model):
    device = getattr(model, "device", None)
    if device is not None:
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return "cpu"


def _left_pad(tokenizer, prompts: Sequence[str], device):
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise UserError("the tokenizer has neither a pad nor an eos token; expected one of them for batching; "
                        "set tokenizer.pad_token before evaluating")
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        if ids:
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
    return input_ids.to(device), attention.to(device), pad_id


def generate_batch(model, tokenizer, prompts: Sequence[str], config: GenerationConfig,
                   stop: Sequence[str] = ()) -> list[str]:
    """One completion per prompt (one `.generate` call), cut at the stop sequences."""
    import torch

    input_ids, attention, pad_id = _left_pad(tokenizer, prompts, _device_of(model))
    kwargs = dict(max_new_tokens=config.max_new_tokens, use_cache=True, pad_token_id=pad_id,
                  do_sample=not config.greedy)
    if not config.greedy:
        kwargs.update(temperature=config.temperature, top_p=config.top_p)
    if stop:
        kwargs["stopping_criteria"] = _stop_criteria(tokenizer, input_ids.shape[1], stop)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    texts = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
    return [truncate_at_stop(t, stop) for t in texts]


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    stop: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """`config.n` completions for each prompt: result[i][j] is sample j of prompt i.

    Requests are sorted longest-first so a batch wastes little padding (and memory errors show up early).
    """
    import torch

    if config.seed is not None:
        torch.manual_seed(config.seed)
    requests = [(i, j) for i in range(len(prompts)) for j in range(config.n)]
    requests.sort(key=lambda r: (-len(prompts[r[0]]), r))
    results: list[list[str]] = [[""] * config.n for _ in prompts]
    for start in range(0, len(requests), config.batch_size):
        chunk = requests[start:start + config.batch_size]
        texts = generate_batch(model, tokenizer, [prompts[i] for i, _ in chunk], config, stop)
        for (i, j), text in zip(chunk, texts):
            results[i][j] = text
        if progress is not None:
            progress(min(start + config.batch_size, len(requests)), len(requests))
    return results

"""One prompt, one completion, streamed as it is produced: the library side of `dylora-moe generate`.

The prompt goes through the training template (`encode_prompt`) unless raw, since a model answers well only
when prompted exactly as it was trained.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dylora_moe.errors import UserError
from dylora_moe.eval.generation import GenerationConfig, _device_of, learned_positions, position_overflow


@dataclass(frozen=True)
class Completion:
    text: str
    new_tokens: int
    seconds: float
    stopped_at_eos: bool

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def prompt_ids(tokenizer, text: str, raw: bool = False, chat: bool = False) -> list[int]:
    """Token ids of the prompt: the training template around `text`, or `text` itself when raw."""
    if raw:
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    from dylora_moe.data.encoding import encode_prompt

    return encode_prompt(tokenizer, text, chat=chat)


def _streamer(tokenizer, on_text: Callable[[str], None]):
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def complete(model, tokenizer, ids: list[int], config: GenerationConfig,
             on_text: Callable[[str], None] | None = None) -> Completion:
    """Generate after `ids` until EOS or `config.max_new_tokens`; `on_text` receives the text as it grows.
    Refused up front when they would not fit a model with learned positions (it would crash mid-way)."""
    import torch

    limit = learned_positions(model)
    overflow = position_overflow(len(ids), config.max_new_tokens, limit)
    if overflow:
        room = limit[0] - len(ids)
        raise UserError(f"{overflow}; " + (f"lower --max_new_tokens to at most {room}, or shorten the prompt"
                                            if room >= 1 else f"shorten the prompt to under {limit[0]} tokens"))

    if config.seed is not None:
        torch.manual_seed(config.seed)
    input_ids = torch.tensor([ids], dtype=torch.long, device=_device_of(model))
    eos = tokenizer.eos_token_id
    kwargs = dict(max_new_tokens=config.max_new_tokens, use_cache=True, do_sample=not config.greedy,
                  eos_token_id=eos, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    if not config.greedy:
        kwargs.update(temperature=config.temperature, top_p=config.top_p)
    if on_text is not None:
        kwargs["streamer"] = _streamer(tokenizer, on_text)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    seconds = time.perf_counter() - started
    new = output[0, input_ids.shape[1]:].tolist()
    return Completion(text=tokenizer.decode(new, skip_special_tokens=True), new_tokens=len(new), seconds=seconds,
                      stopped_at_eos=bool(new) and eos is not None and new[-1] == eos)

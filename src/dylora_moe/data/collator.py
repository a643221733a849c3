"""Right-padding collator for causal-LM batches built by `build_datasets`.

Why labels are padded with -100 rather than the pad id: the pad id may equal a real token (unk, or EOS in
careless set-ups) and must never be learned; EOS inside the labels is a real, learned token.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


class CausalLMCollator:
    """Pads input_ids with pad_token_id, builds attention_mask 1/0, pads labels with -100."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is required (use a dedicated pad token or unk, never rely on None)")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        ids = [_as_list(f["input_ids"]) for f in features]
        labels = [_as_list(f["labels"]) if "labels" in f else list(i) for f, i in zip(features, ids)]
        for i, lab in zip(ids, labels):
            if len(i) != len(lab):
                raise ValueError(f"input_ids and labels differ in length ({len(i)} vs {len(lab)})")
        width = max(len(i) for i in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (i, lab) in enumerate(zip(ids, labels)):
            n = len(i)
            if n:
                batch_ids[row, :n] = torch.tensor(i, dtype=torch.long)
                batch_labels[row, :n] = torch.tensor(lab, dtype=torch.long)
                mask[row, :n] = 1
        return {"input_ids": batch_ids, "attention_mask": mask, "labels": batch_labels}


def _as_list(value) -> list[int]:
    return value.tolist() if hasattr(value, "tolist") else list(value)

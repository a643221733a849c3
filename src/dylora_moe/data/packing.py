"""`PackingCollator`: the examples of a batch flattened into one row, without padding.

Each example keeps its own positions (`position_ids` restart at 0), so the base's mask utilities build a
block-causal mask from them (no attention across examples, as with transformers' `DataCollatorWithFlattening`)
and the routers restart their running means at each example. The first label of every example is -100: it
would otherwise be predicted from the end of the previous example. No `attention_mask` is returned, which is
what tells transformers to read the example boundaries from `position_ids`.
"""

from __future__ import annotations

import torch

from dylora_moe.data.collator import IGNORE_INDEX, _as_list


class PackingCollator:
    """list of {input_ids, labels} -> {input_ids, labels, position_ids}, each of shape (1, total tokens)."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for feature in features:
            example_ids = _as_list(feature["input_ids"])
            example_labels = _as_list(feature["labels"]) if "labels" in feature else list(example_ids)
            if len(example_ids) != len(example_labels):
                raise ValueError(f"input_ids and labels differ in length ({len(example_ids)} vs {len(example_labels)})")
            if not example_ids:
                continue
            ids += example_ids
            labels += [IGNORE_INDEX] + example_labels[1:]
            positions += list(range(len(example_ids)))
        def row(values: list[int]) -> torch.Tensor:
            return torch.tensor([values], dtype=torch.long)
        return {"input_ids": row(ids), "labels": row(labels), "position_ids": row(positions)}

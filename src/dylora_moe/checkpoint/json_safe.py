"""Make checkpoint metadata acceptable to JSON-only consumers (W&B validates artifact metadata).

Why: a run's `best_metric` is `inf` until the first evaluation and can be NaN after a diverged one;
JSON has neither, so W&B refuses the artifact (or turns NaN into null). Non-finite floats become the
strings "inf", "-inf" and "nan", so the value stays readable instead of vanishing.
"""

from __future__ import annotations

import math
from pathlib import PurePath


def json_safe(value):
    """A copy of `value` with only JSON types: non-finite floats as strings, tuples as lists, paths as str."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return json_safe(value.item())
    return str(value)

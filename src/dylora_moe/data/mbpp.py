"""MBPP: the official task-id split and the prompt that shows the problem and its tests.

Why the task-id split: the MBPP benchmark evaluates on tasks 11-510, so training must only ever see the
train range (601-974); otherwise benchmark scores measure memorisation.
"""

from __future__ import annotations

SPLIT_RANGES: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
TRAIN_SPLIT = "train"


def mbpp_split(task_id: int) -> str:
    """The official split of an MBPP task id (1-974)."""
    for name, (low, high) in SPLIT_RANGES.items():
        if low <= int(task_id) <= high:
            return name
    raise ValueError(f"MBPP task id {task_id} is outside 1-974")


def mbpp_instruction(row: dict) -> tuple[str, str]:
    """(instruction, input) for an MBPP row: the problem text, then the tests the code must pass."""
    tests = "\n".join(t.replace("\r\n", "\n") for t in row.get("test_list") or [])
    setup = (row.get("test_setup_code") or "").replace("\r\n", "\n").strip()
    extra = f"Test setup:\n{setup}\n\n" if setup else ""
    return row["text"].strip(), f"{extra}Your code should pass these tests:\n{tests}"


def mbpp_response(row: dict) -> str:
    """The reference code with Windows line ends normalised (the original file uses \\r\\n)."""
    return row["code"].replace("\r\n", "\n").rstrip()

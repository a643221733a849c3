"""The seed's four registry datasets as a local mirror (DYLORA_DATA_DIR), built from ../shared/data at test time.

Each file has its dataset's real hub layout (CodeAlpaca: a JSON list of instruction/input/output; MBPP: the
original jsonl with task ids; Evol-Instruct: instruction/output; CodeFeedback: query/answer), so the registry's
own row formats map them. Nothing here is committed data: the rows are cut from the shared files.
"""

from __future__ import annotations

import json
from pathlib import Path

SEED_DATASETS = "code_alpaca,mbpp,evol_instruct,code_feedback"


def write_seed_mirror(shared: Path, directory: Path, rows: int = 10) -> Path:
    """`rows` examples per dataset (MBPP: train tasks 601+, plus two test tasks the loader must skip)."""
    directory.mkdir(parents=True, exist_ok=True)
    alpaca = json.loads((shared / "code_alpaca_2k.json").read_text())
    mbpp = [json.loads(line) for line in (shared / "mbpp.jsonl").read_text().splitlines() if line.strip()]
    mbpp = [r for r in mbpp if r["task_id"] in (11, 12)] + [r for r in mbpp if 601 <= r["task_id"]][:rows]
    (directory / "code_alpaca.json").write_text(json.dumps(alpaca[:rows]))
    (directory / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mbpp))
    (directory / "evol_instruct.json").write_text(json.dumps(
        [{"instruction": r["instruction"] + ("\n" + r["input"] if r["input"] else ""), "output": r["output"]}
         for r in alpaca[100:100 + rows]]))
    (directory / "code_feedback.jsonl").write_text("".join(
        json.dumps({"query": r["instruction"], "answer": r["output"], "resource": "shared", "lang": "python"}) + "\n"
        for r in alpaca[200:200 + rows]))
    return directory

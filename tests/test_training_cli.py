"""`dylora-moe train` bad input: one line, exit 2, before any model is loaded, nothing written."""

from __future__ import annotations

import pytest

from dylora_moe.cli import main


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--datasets", "code_alpaca"], "error: dataset 'code_alpaca' comes from the Hugging Face hub "
         "(sahil2801/CodeAlpaca-20k), which is offline or unreachable; bind it to a local file instead: "
         "--datasets \"code_alpaca=path/to/file.jsonl\" (json, jsonl or parquet)"),
        (["--datasets", "nope"], "error: unknown dataset 'nope'; known: code_alpaca,"),
        (["--bf16", "--fp16"], "error: --bf16 and --fp16 were both given; choose one"),
        (["--num_experts", "0"], "error: --num_experts must be at least 1, got 0"),
        (["--resume_from_checkpoint"], "error: --resume_from_checkpoint without a value continues the newest "
         "complete checkpoint in --output_dir"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, line):
    out = tmp_path / "out"
    assert main(["train", "--model_name", str(tmp_path / "no-model-needed"), "--output_dir", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
    assert not out.exists()

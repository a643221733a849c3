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
        (["--learning_rate", "nan"], "error: --learning_rate must be a finite number, got nan"),
        (["--learning_rate", "-1"], "error: --learning_rate must be >= 0, got -1"),
        (["--lora_dropout", "1.5"], "error: --lora_dropout must be >= 0 and < 1, got 1.5"),
        (["--label_smoothing", "2"], "error: --label_smoothing must be >= 0 and < 1, got 2"),
        (["--router_temperature", "0"], "error: --router_temperature must be > 0, got 0"),
        (["--router_temperature", "-1"], "error: --router_temperature must be > 0, got -1"),
        (["--top_k", "5"], "error: --top_k 5 is larger than the number of experts (4); give --top_k at most 4 or "
         "raise --num_experts"),
        (["--max_grad_norm", "inf"], "error: --max_grad_norm must be a finite number, got inf"),
        (["--checkpoint_store", "/dev/null"], "error: --checkpoint_store /dev/null is a file, not a checkpoint "
         "store directory"),
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

"""What a run writes when its output goes to a file (a few formatted lines, no carriage returns, no raw dicts, no
warnings from libraries the user did not ask for) and to a terminal (HF's bars as before)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from dylora_moe.training.progress_log import eval_line, train_line
from train_helpers import ALPACA, cli_env

# a run's `python -m dylora_moe ARGS`, saying at exit whether bitsandbytes was ever imported
REPORTS_BNB = ("import sys\nfrom dylora_moe.cli import main\ncode = main(sys.argv[1:])\n"
               "print('bitsandbytes imported:', sys.modules.get('bitsandbytes') is not None, file=sys.stderr)\n"
               "sys.exit(code)")
NOISE = re.compile(r"Failed|[Ww]arn|bitsandbytes|kernels-community|Skipping publisher")
TRAIN_LINE = re.compile(r"\[train\] step (\d+)/40 \(\d+%\): loss \d+\.\d+ \(lm \d+\.\d+, balance \d+\.\d+\), "
                        r"lr \d\.\d+e-0\d, [\d,]+ tokens/s, ETA \d+:\d\d:\d\d")


def run_to_file(args: list[str], path: Path, code: str | None = None, timeout: int = 600) -> str:
    """`python -m dylora_moe ARGS` (or `python -c CODE ARGS`) with stdout and stderr redirected to `path`."""
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "dylora_moe", *args]
    with open(path, "wb") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=cli_env(), timeout=timeout)
    text = path.read_bytes().decode()
    assert done.returncode == 0, text[-3000:]
    return text


@pytest.fixture(scope="module")
def main_job_log(tmp_path_factory) -> str:
    """The main job (tiny base, stdlib data), 40 steps logging every 10, its output to a file."""
    tmp = tmp_path_factory.mktemp("main-job")
    return run_to_file(["train", "--max_steps", "40", "--logging_steps", "10", "--write_report", "--eval_subset", "10",
                        "--output_dir", str(tmp / "out")], tmp / "train.log", code=REPORTS_BNB)


@pytest.mark.slow
def test_main_job_to_a_file_is_a_few_formatted_lines(main_job_log):
    lines = main_job_log.splitlines()
    assert "\r" not in main_job_log
    assert not [line for line in lines if line.lstrip().startswith("{")], main_job_log
    assert [line for line in lines if NOISE.search(line)] == ["bitsandbytes imported: False"], main_job_log
    assert len(lines) <= 20, main_job_log
    progress = [line for line in lines if re.match(r"\[train\] step \d+/40", line)]
    assert [int(TRAIN_LINE.fullmatch(line).group(1)) for line in progress] == [10, 20, 30, 40], main_job_log
    assert len([line for line in lines if re.fullmatch(r"\[eval\] step 40/40 \(100%\): loss \d+\.\d+ "
                                                       r"\(lm \d+\.\d+, balance \d+\.\d+\) in \d+\.\d s", line)]) == 1


def test_progress_lines_say_step_of_total_losses_lr_speed_and_eta():
    logs = {"loss": 5.5901, "grad_norm": 0.0657, "learning_rate": 0.00091857, "lm_loss": 5.58, "balance_loss": 1.0312,
            "routing_entropy": 1.335, "expert_usage_0": 0.25, "epoch": 0.025}
    assert train_line(logs, 10, 40, 1234.4, 17.4) == (
        "[train] step 10/40 (25%): loss 5.5901 (lm 5.5800, balance 1.0312), lr 9.19e-04, 1,234 tokens/s, ETA 0:00:17")
    assert train_line({"loss": 2.0}, 3, 0, None, None) == "[train] step 3: loss 2.0000"
    assert eval_line({"eval_loss": 5.4816, "eval_lm_loss": 5.47, "eval_balance_loss": 0.9999, "eval_runtime": 10.87,
                      "epoch": 0.1}, 40, 40) == (
        "[eval] step 40/40 (100%): loss 5.4816 (lm 5.4700, balance 0.9999) in 10.9 s")


def _micro_train(base: str, out: Path, *extra: str) -> list[str]:
    """4 steps on the micro base, a line every 2, an evaluation at the end."""
    return ["train", "--model_name", base, "--output_dir", str(out), "--max_steps", "4", "--logging_steps", "2",
            "--save_steps", "4", "--train_batch_size", "4", "--report_to", "none",
            "--datasets", f"code_alpaca={ALPACA}", "--max_seq_length", "64", "--max_examples_per_dataset", "40",
            "--eval_fraction", "0.1", *extra]


def run_in_terminal(args: list[str], timeout: int = 300) -> str:
    """`python -m dylora_moe ARGS` with stdout and stderr on a pseudo-terminal of 100 columns; everything it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # tqdm draws nothing in 0 columns
    process = subprocess.Popen([sys.executable, "-m", "dylora_moe", *args], stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower, env=cli_env())
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_on_a_terminal_the_bars_stay(base, tmp_path):
    output = run_in_terminal(_micro_train(base, tmp_path / "out"))
    assert re.search(r"\r *100%\|\S+\| 4/4 \[", output), output  # the training bar, redrawn in place, finished
    assert re.search(r"\[train\] step 2/4 \(50%\): loss ", output), output
    assert not re.search(r"^\{", output.replace("\r", "\n"), re.MULTILINE), output
    assert "Loading weights" not in output  # transformers' own bars only with --verbose


@pytest.mark.slow
def test_generate_and_eval_to_a_file_have_no_library_noise(base, tmp_path, shared_data):
    text = run_to_file(["generate", "--model", base, "--base-model", "--raw", "--prompt", "def add(a, b):",
                        "--max_new_tokens", "4"], tmp_path / "generate.log", code=REPORTS_BNB)
    assert "\r" not in text and "Loading weights" not in text
    assert [line for line in text.splitlines() if NOISE.search(line)] == ["bitsandbytes imported: False"], text
    text = run_to_file(["eval", "--model", base, "--base-model", "--benchmarks", "mbpp", "--mbpp_path",
                        str(shared_data / "mbpp.jsonl"), "--limit", "1", "--max_new_tokens", "4", "--output",
                        str(tmp_path / "res.json")], tmp_path / "eval.log", code=REPORTS_BNB)
    assert "\r" not in text and "Loading weights" not in text
    assert [line for line in text.splitlines() if NOISE.search(line)] == ["bitsandbytes imported: False"], text
    verbose = run_to_file(["generate", "--model", base, "--base-model", "--raw", "--prompt", "x", "--max_new_tokens",
                           "1", "--verbose"], tmp_path / "verbose.log")
    assert "Loading weights" in verbose


@pytest.mark.slow
def test_4bit_generate_to_a_file_says_what_bitsandbytes_does_on_the_cpu_in_one_line(base, tmp_path):
    text = run_to_file(["generate", "--model", base, "--base-model", "--load_in_4bit", "--raw", "--prompt",
                        "def add(a, b):", "--max_new_tokens", "4"], tmp_path / "generate.log")
    noise = [line for line in text.splitlines() if NOISE.search(line) and not line.startswith("[model]")]
    assert noise == [], text
    assert [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("[model]")] == [
        "14 Linear layers in bnb-4bit nf4 (bitsandbytes), computing in float32; on the CPU they save memory, not "
        "time (slower than full precision)"]

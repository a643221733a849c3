"""Start-up cost of resuming: seconds from command start to the first optimizer step, fresh vs resumed.

A checkpoint of the seed's typical size (~55 MB with optimizer state: the tiny base, 16 experts of rank 64)
is uploaded once to the loopback W&B server of tests/wandb_server (real wandb SDK, online). Then three kinds of
`dylora-moe train --max_steps N` subprocess are timed until their first `[train] step` line (logging every
step): a fresh run; a run resumed from `:latest` with an empty artifact cache (download); and one resumed
from `:latest` with the cache holding the verified copy. The server counts the blob bytes it serves during each
resume. Medians of --repeats runs; the runs take turns, so a slow moment of a shared machine spreads over all.

    python benchmarks/resume_startup.py              # ~55 MB checkpoint, 3 repeats
    python benchmarks/resume_startup.py --quick      # small checkpoint, 1 repeat (what the test runs)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

ALPACA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"
STEP_LINE = re.compile(r"\[train\] step \d+")
STORE = "wandb://ent/proj/resume-bench"


class Env:
    """monkeypatch-like setenv for `online_wandb_env`, outside pytest."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)


def train_args(out: Path, experts: int, rank: int, max_steps: int, *extra: str) -> list[str]:
    return ["train", "--output_dir", str(out), "--num_experts", str(experts), "--lora_r", str(rank),
            "--datasets", f"code_alpaca={ALPACA}", "--max_examples_per_dataset", "64", "--max_seq_length", "64",
            "--train_batch_size", "4", "--max_steps", str(max_steps), "--save_steps", "2", "--logging_steps", "1",
            "--report_to", "none", *extra]


def child_env(cache: Path) -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1", DYLORA_MOE_CACHE_DIR=str(cache),
                PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def until_first_step(args: list[str], env: dict, python: list[str] | None = None) -> tuple[float, str]:
    """Seconds from spawning `dylora-moe ARGS` to its first `[train] step` line; the run is then killed."""
    start = time.perf_counter()
    proc = subprocess.Popen([*(python or [sys.executable]), "-m", "dylora_moe", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if STEP_LINE.search(line):
            elapsed = time.perf_counter() - start
            proc.kill()
            proc.wait()
            return elapsed, "".join(lines)
    proc.wait()
    raise RuntimeError(f"no training step (exit {proc.returncode}):\n" + "".join(lines)[-3000:])


def served_during(server, func):
    """(result of func(), blob bytes the server sent meanwhile)."""
    before = server.blob_bytes_served
    result = func()
    return result, server.blob_bytes_served - before


def fetch_phase(cache: Path) -> float:
    """Seconds of the resume's own fetch in this process: resolve `:latest`, then download and verify, or find
    the verified copy in `cache`. Steadier than whole runs on a shared machine (no imports, no training)."""
    from dylora_moe.checkpoint.resolve import fetch_checkpoint

    os.environ["DYLORA_MOE_CACHE_DIR"] = str(cache)
    start = time.perf_counter()
    fetch_checkpoint(f"{STORE}:latest", log=lambda m: None)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2 experts of rank 8, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.experts, args.rank = 1, 2, 8

    import wandb
    from wandb_server import LoopbackWandb, online_wandb_env

    tmp = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    server = LoopbackWandb().start()
    try:
        online_wandb_env(Env(), tmp, server)
        os.environ.pop("DYLORA_MOE_CACHE_DIR", None)
        setup = subprocess.run([sys.executable, "-m", "dylora_moe",
                                *train_args(tmp / "first", args.experts, args.rank, 2, "--checkpoint_store", STORE)],
                               env=child_env(tmp / "setup-cache"), capture_output=True, text=True)
        if setup.returncode != 0:
            raise RuntimeError(setup.stderr[-3000:])
        ckpt = tmp / "first" / "checkpoint-2"
        size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
        print(f"checkpoint: {args.experts} experts x r={args.rank}, {size / 1e6:.1f} MB ({ckpt.name}), uploaded to "
              f"{STORE}")

        warm = tmp / "warm-cache"
        resume = ("--resume_from_checkpoint", f"{STORE}:latest")
        times: dict[str, list[float]] = {"fresh": [], "download": [], "cache": []}
        fetched: dict[str, list[int]] = {"download": [], "cache": []}
        for i in range(args.repeats):
            t, _ = until_first_step(train_args(tmp / f"fresh-{i}", args.experts, args.rank, 3), child_env(tmp / "c0"))
            times["fresh"].append(t)
            (t, log), sent = served_during(server, lambda i=i: until_first_step(
                train_args(tmp / f"dl-{i}", args.experts, args.rank, 3, *resume), child_env(tmp / f"cold-{i}")))
            if i == 0:
                shutil.copytree(tmp / f"cold-{i}", warm)  # the verified copy the cached runs find
            times["download"].append(t)
            fetched["download"].append(sent)
            (t, log), sent = served_during(server, lambda i=i: until_first_step(
                train_args(tmp / f"cached-{i}", args.experts, args.rank, 3, *resume), child_env(warm)))
            if "resuming at step 2" not in log:
                raise RuntimeError("the cached run did not resume:\n" + log[-3000:])
            times["cache"].append(t)
            fetched["cache"].append(sent)

        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"fresh: {med['fresh']:.2f} s to the first optimizer step (median of {args.repeats})")
        print(f"resumed, download: {med['download']:.2f} s, {statistics.median(fetched['download'])} bytes fetched")
        print(f"resumed, from cache: {med['cache']:.2f} s, {max(fetched['cache'])} bytes fetched")
        print(f"delta download: {med['download'] - med['fresh']:+.2f} s")
        print(f"delta cache: {med['cache'] - med['fresh']:+.2f} s")
        cold = [fetch_phase(tmp / f"phase-cold-{i}") for i in range(args.repeats)]
        hot = [fetch_phase(warm) for _ in range(args.repeats)]
        print(f"fetch phase in process: download {statistics.median(cold):.3f} s, cache hit "
              f"{statistics.median(hot):.3f} s (median of {args.repeats})")
        print("runs (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))
    finally:
        wandb.teardown()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Disk bytes used while one checkpoint is uploaded to W&B online, and while it is downloaded again.

Real wandb SDK, online, against the loopback W&B server of tests/wandb_server (blobs are kept in the
server's memory, so every byte on disk is the client's). A sampler thread sums the allocated size of
every file under the run's temp dir (each hard-linked inode once) every few milliseconds; the figure is the
peak above the checkpoint itself. Two arms in the same process: this project's upload (immutable files,
no SDK cache) and the SDK's default (`add_file` copies into staging, the cache keeps another copy).

    python benchmarks/wandb_upload_disk.py --size_mib 64
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def allocated_bytes(root: Path) -> int:
    """Bytes allocated on disk under root, counting each inode once (hard links are not copies)."""
    seen, total = set(), 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue  # removed while we walked
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


class PeakSampler:
    def __init__(self, root: Path, interval_s: float = 0.005):
        self.root, self.interval_s, self.peak = root, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, allocated_bytes(self.root))
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, allocated_bytes(self.root))


class Env:
    """monkeypatch-like setenv for `online_wandb_env`, outside pytest."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)


def measure(size: int, copy_online: bool) -> dict:
    import wandb
    from ckpt_helpers import make_checkpoint
    from wandb_server import LoopbackWandb, online_wandb_env

    from dylora_moe.checkpoint.stores.wandb_sdk import SdkBackend
    from dylora_moe.checkpoint.stores.wandb_store import WandbStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = LoopbackWandb().start()
        online_wandb_env(Env(), tmp, server)
        ckpt = make_checkpoint(tmp / "out", 10, payload=os.urandom(size))
        backend = SdkBackend()
        backend.copy_online = copy_online
        store = WandbStore("ent", "proj", "ckpt", backend=backend)
        store.publish(make_checkpoint(tmp / "warm", 1))  # start the upload run before measuring
        base = allocated_bytes(tmp)
        with PeakSampler(tmp) as upload:
            store.publish(ckpt, ["step-10"])
        after_upload = allocated_bytes(tmp)
        with PeakSampler(tmp) as download:
            store.download("v1", tmp / "downloaded", log=lambda m: None)
        store.close()
        wandb.teardown()
        server.stop()
        return {"upload_peak": upload.peak - base, "upload_left": after_upload - base,
                "download_peak": download.peak - after_upload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size_mib", type=int, default=64)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    ours, sdk_default = measure(size, copy_online=False), measure(size, copy_online=True)
    print(f"checkpoint S = {size} bytes; extra disk bytes as multiples of S")
    print(f"{'arm':<28}{'upload peak':>14}{'left after':>14}{'download peak':>16}")
    for label, row in (("dylora-moe (immutable)", ours), ("SDK default (copies)", sdk_default)):
        print(f"{label:<28}{row['upload_peak'] / size:>13.2f}x{row['upload_left'] / size:>13.2f}x"
              f"{row['download_peak'] / size:>15.2f}x")
    print(f"ratio upload peak ours / SDK default: {ours['upload_peak'] / max(sdk_default['upload_peak'], 1):.2f}")


if __name__ == "__main__":
    main()

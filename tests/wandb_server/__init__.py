"""A loopback W&B backend that the real `wandb` SDK talks to in online mode (see server.py).

`online_wandb_env` points the SDK at a started `LoopbackWandb`: online mode, a throw-away API key of
the length the SDK requires, every SDK directory under the test's tmp dir, no error reporting or system
metrics, and a fresh SDK singleton (`wandb.teardown()`), because the SDK keeps its settings per process.
"""

from __future__ import annotations

from pathlib import Path

from .server import LoopbackWandb

TEST_API_KEY = "local-" + "0123456789abcdef" * 3  # >= 40 characters, as the SDK checks

__all__ = ["LoopbackWandb", "TEST_API_KEY", "online_wandb_env"]


def online_wandb_env(monkeypatch, tmp_path: Path, server: LoopbackWandb) -> None:
    import wandb

    wandb.teardown()
    env = {
        "WANDB_MODE": "online", "WANDB_BASE_URL": server.base_url, "WANDB_API_KEY": TEST_API_KEY,
        "WANDB_ERROR_REPORTING": "false", "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_META": "true",
        "WANDB_X_DISABLE_MACHINE_INFO": "true", "WANDB_SILENT": "true", "WANDB_INIT_TIMEOUT": "60",
        "NETRC": str(tmp_path / "no-netrc"), "DYLORA_MOE_CACHE_DIR": str(tmp_path / "cache"),
    }
    for var, sub in (("WANDB_DIR", "wdir"), ("WANDB_DATA_DIR", "wdata"), ("WANDB_CACHE_DIR", "wcache"),
                     ("WANDB_CONFIG_DIR", "wconfig")):
        (tmp_path / sub).mkdir(exist_ok=True)
        env[var] = str(tmp_path / sub)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for var in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_CHECKPOINT_ARTIFACT"):
        monkeypatch.delenv(var, raising=False)

"""pytest fixture: a loopback W&B server per test, the SDK pointed at it online, unknown requests fail the test."""

from __future__ import annotations

import pytest

from . import LoopbackWandb, online_wandb_env


@pytest.fixture
def wandb_server(monkeypatch, tmp_path):
    import wandb

    server = LoopbackWandb().start()
    online_wandb_env(monkeypatch, tmp_path, server)
    try:
        yield server
    finally:
        wandb.teardown()  # finishes runs still open and stops the SDK's service before the server goes
        server.stop()
    assert not server.unknown, f"the SDK asked the loopback W&B server for unimplemented fields: {server.unknown}"

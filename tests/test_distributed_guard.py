"""Sharded set-ups (FSDP, DeepSpeed) stop before training with one clear line; DDP and single runs pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dylora_moe.errors import UserError
from dylora_moe.training.distributed import check_supported_parallelism


@pytest.mark.parametrize("flags", [{}, {"is_fsdp_enabled": False, "is_deepspeed_enabled": False}])
def test_data_parallel_and_single_process_runs_pass(flags):
    assert check_supported_parallelism(SimpleNamespace(**flags)) is None


@pytest.mark.parametrize("flag, engine", [("is_fsdp_enabled", "FSDP"), ("is_deepspeed_enabled", "DeepSpeed")])
def test_sharded_runs_are_refused_with_the_way_out(flag, engine):
    with pytest.raises(UserError) as info:
        check_supported_parallelism(SimpleNamespace(**{flag: True}))
    assert str(info.value) == (
        f"{engine} is enabled (by accelerate launch or its config), but sharded training is not supported yet: "
        "checkpoints are written from the main process's copy of the experts, which would be only its shard; "
        "run data-parallel instead: torchrun --nproc_per_node N -m dylora_moe train ... (or accelerate launch "
        "--multi_gpu without --use_fsdp / --use_deepspeed)"
    )

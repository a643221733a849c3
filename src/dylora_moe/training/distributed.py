"""Which multi-process set-ups a run accepts: DDP (torchrun / accelerate launch) yes, parameter sharding no.

Checkpoints are adapter-only and written by the main process from its own copy of the parameters. Under DDP
every process holds the full experts and routers, so that copy is complete. Under FSDP or DeepSpeed the
parameters (and the optimizer state) are sharded across processes, and the same code would write one shard
and call it a checkpoint. Until a gathered save is built and verified on accelerators, such a run stops
before the first step with a clear message instead of writing wrong checkpoints.
"""

from __future__ import annotations

import torch

from dylora_moe.errors import UserError


def reduced_over_processes(value: int, op: str = "sum") -> int:
    """`value` reduced (op "sum" or "max") over every process of a distributed run; `value` itself in a single
    process. Every process must call it at the same point."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.int64)
    if torch.distributed.get_backend() == "nccl":
        total = total.cuda()
    torch.distributed.all_reduce(total, op=getattr(torch.distributed.ReduceOp, op.upper()))
    return int(total.item())


def end_process_group() -> None:
    """Destroy the default process group at the end of a command: a process that exits with gloo's threads still
    alive can abort in C++ teardown ("terminate called without an active exception"), turning a clean exit code
    such as 143 (preempted) into SIGABRT."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_supported_parallelism(trainer) -> None:
    """Raise UserError when the Trainer/accelerate set-up shards parameters (FSDP, DeepSpeed)."""
    engine = None
    if getattr(trainer, "is_fsdp_enabled", False):
        engine = "FSDP"
    elif getattr(trainer, "is_deepspeed_enabled", False):
        engine = "DeepSpeed"
    if engine is None:
        return
    raise UserError(
        f"{engine} is enabled (by accelerate launch or its config), but sharded training is not supported yet: "
        "checkpoints are written from the main process's copy of the experts, which would be only its shard; "
        "run data-parallel instead: torchrun --nproc_per_node N -m dylora_moe train ... (or accelerate launch "
        "--multi_gpu without --use_fsdp / --use_deepspeed)"
    )

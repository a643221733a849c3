"""Vertex AI `CLUSTER_SPEC` -> torchrun's node-level rendezvous settings.

Vertex sets `CLUSTER_SPEC` in every replica of a multi-replica CustomJob, e.g.
`{"cluster": {"workerpool0": ["host-0:2222"], "workerpool1": ["host-1:2222", …]},
  "task": {"type": "workerpool1", "index": 0}}`.
Pool 0 holds the single chief, pool 1 the other training nodes (pools 2/3 — reduction server, evaluator — are
not training nodes). The chief is node 0 and the rendezvous master; pool-1 replica i is node 1 + i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dylora_moe.errors import UserError

TRAINING_POOLS = ("workerpool0", "workerpool1")


@dataclass(frozen=True)
class NodeInfo:
    """Where this replica sits among the training nodes (torchrun's --nnodes/--node_rank/--master_*)."""

    master_addr: str
    master_port: int
    node_rank: int
    nnodes: int


def _split_host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"CLUSTER_SPEC: {entry!r} is not host:port; expected e.g. 'workerpool0-0:2222'")
    return host, int(port)


def parse_cluster_spec(text: str) -> NodeInfo:
    """Parse Vertex's CLUSTER_SPEC JSON; UserError if it is malformed or this task is not a training node."""
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        task_type, task_index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"CLUSTER_SPEC is not valid Vertex AI cluster JSON ({type(exc).__name__}: {exc}); expected "
            '{"cluster": {"workerpool0": ["host:port"], …}, "task": {"type": "workerpool0", "index": 0}}'
        ) from exc
    chiefs = list(cluster.get("workerpool0") or [])
    workers = list(cluster.get("workerpool1") or [])
    if len(chiefs) != 1:
        raise UserError(
            f"CLUSTER_SPEC: workerpool0 must hold exactly one chief replica, found {len(chiefs)}; "
            "submit with replica count N to get 1 chief + N-1 workers"
        )
    if task_type not in TRAINING_POOLS:
        raise UserError(
            f"CLUSTER_SPEC: this task is in {task_type}, which is not a training pool "
            f"(expected one of {', '.join(TRAINING_POOLS)})"
        )
    pool = chiefs if task_type == "workerpool0" else workers
    if not 0 <= task_index < len(pool):
        raise UserError(f"CLUSTER_SPEC: task index {task_index} is outside {task_type} ({len(pool)} replicas)")
    master_addr, master_port = _split_host_port(chiefs[0])
    for entry in workers:
        _split_host_port(entry)
    node_rank = task_index if task_type == "workerpool0" else len(chiefs) + task_index
    return NodeInfo(master_addr, master_port, node_rank, len(chiefs) + len(workers))

"""Container entrypoint: `python -m dylora_moe.cloud.entrypoint <training args>`.

At start it (1) resolves `DYLORA_SECRET_<NAME>` Secret Manager names into `<NAME>` (a plain `<NAME>` already set
wins), (2) expands `${AIP_CHECKPOINT_DIR}`-style placeholders in the args (Vertex sets them in the container env,
not in the job spec), (3) derives the node rendezvous from `CLUSTER_SPEC` on multi-replica jobs, then replaces
itself (`os.execvp`, no shell, no child) with `torchrun … -m dylora_moe train …` when more than one process is
needed, else with `python -m dylora_moe train …`. Because of the exec, the platform's SIGTERM on preemption
reaches the trainer (or torchrun, which forwards it to its workers) directly. Secret values are never printed.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from dylora_moe.cloud.cluster_spec import NodeInfo, parse_cluster_spec
from dylora_moe.cloud.secrets import resolve_secrets
from dylora_moe.cloud.vertex_spec import NPROC_ENV
from dylora_moe.errors import UserError

# Only Vertex's own path variables are expanded: a general $VAR expansion could copy a secret into argv.
EXPANDABLE = ("AIP_CHECKPOINT_DIR", "AIP_MODEL_DIR", "AIP_TENSORBOARD_LOG_DIR")
_PLACEHOLDER = re.compile(r"\$\{(" + "|".join(EXPANDABLE) + r")\}|\$(" + "|".join(EXPANDABLE) + r")\b")


def expand_vertex_vars(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Replace ${AIP_CHECKPOINT_DIR} (and the other AIP_* dirs) in args; UserError if one is unset."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        value = env.get(name)
        if not value:
            raise UserError(
                f"the training arguments use ${{{name}}} but {name} is not set; Vertex AI sets it when the job "
                f"has a base output directory; for a local run set {name} or pass an explicit path"
            )
        return value

    return [_PLACEHOLDER.sub(substitute, a) for a in args]


def procs_per_node(env: Mapping[str, str]) -> int:
    """Processes on this node: DYLORA_NPROC_PER_NODE (set by `submit vertex`), else visible GPUs, else 1."""
    raw = env.get(NPROC_ENV)
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UserError(f"{NPROC_ENV}={raw!r}: expected a positive integer")
        return int(raw)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return 1
    return max(1, torch.cuda.device_count())


def build_command(args: Sequence[str], env: MutableMapping[str, str], python: str = sys.executable) -> list[str]:
    """The argv to exec; also exports MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE (node level) from CLUSTER_SPEC."""
    node: NodeInfo | None = parse_cluster_spec(env["CLUSTER_SPEC"]) if env.get("CLUSTER_SPEC") else None
    nproc = procs_per_node(env)
    train = ["-m", "dylora_moe", "train", *args]
    if (node is not None and node.nnodes > 1) or nproc > 1:
        if node is None:  # one machine, several GPUs, no cluster: torchrun picks a free local port
            return ["torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), *train]
        env.update(
            MASTER_ADDR=node.master_addr,
            MASTER_PORT=str(node.master_port),
            RANK=str(node.node_rank),
            WORLD_SIZE=str(node.nnodes),
        )
        return [
            "torchrun",
            "--nnodes", str(node.nnodes),
            "--node_rank", str(node.node_rank),
            "--master_addr", node.master_addr,
            "--master_port", str(node.master_port),
            "--nproc_per_node", str(nproc),
            *train,
        ]  # fmt: skip
    return [python, *train]


def prepare(argv: Sequence[str], env: MutableMapping[str, str]) -> list[str]:
    """Everything before the exec: secrets, placeholders, command. Returns the argv to exec."""
    sources = resolve_secrets(env)
    for name, source in sources.items():
        print(f"[entrypoint] {name}: from {source}", file=sys.stderr)
    command = build_command(expand_vertex_vars(argv, env), env)
    print(f"[entrypoint] exec {' '.join(command)}", file=sys.stderr, flush=True)
    return command


def main(argv: Sequence[str] | None = None, env: MutableMapping[str, str] | None = None) -> int:
    """Prepare and exec (with `env`, default os.environ); returns only on an error (2: user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    try:
        command = prepare(argv, env)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if env is os.environ:
            os.execvp(command[0], command)  # replaces this process: signals go straight to the trainer
        else:
            os.execvpe(command[0], command, dict(env))
    except OSError as exc:
        print(f"error: could not start {command[0]}: {exc.strerror}; is torch installed in the image?", file=sys.stderr)
        return 127
    return 0  # only reached when execvp is patched out (tests)


if __name__ == "__main__":
    raise SystemExit(main())

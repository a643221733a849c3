"""`dylora-moe submit vertex [flags] -- <training args>`: a thin layer over `vertex_spec`/`vertex_submit`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dylora_moe.errors import UserError
from dylora_moe.flags import add_dataclass_flags

if TYPE_CHECKING:
    from dylora_moe.cloud.vertex_spec import VertexJobOptions

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'3600', '90m', '12h', '7d' -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise UserError(f"--timeout {text!r}: expected seconds or a number with s/m/h/d, e.g. 3600, 90m, 24h, 7d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


def _from_env(name: str, help_text: str, default: str | None = None):
    """A default read from the environment when the parser is built (so `--help` shows it)."""
    return field(default_factory=lambda: os.environ.get(name, default), metadata={"help": help_text})


@dataclass
class WhereFlags:
    project: str | None = _from_env("GOOGLE_CLOUD_PROJECT", "GCP project id (also GOOGLE_CLOUD_PROJECT)")
    region: str | None = _from_env("GOOGLE_CLOUD_REGION", "region of the job (also GOOGLE_CLOUD_REGION)",
                                   "us-central1")
    staging_bucket: str | None = field(default=None, metadata={"help": "gs://bucket for job outputs (required)"})
    image_uri: str | None = field(default=None, metadata={"help": (
        "training image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/dylora-moe:TAG")})
    display_name: str = field(default="dylora-moe-train", metadata={"help": "name of the job in the console"})
    base_output_dir: str | None = field(default=None, metadata={"help": (
        "where the job writes; None: <staging-bucket>/dylora-moe/<display-name>")})
    service_account: str | None = field(default=None, metadata={"help": "service account email the job runs as"})
    label: list[str] | None = field(default=None, metadata={"help": "job label (repeatable)", "metavar": "KEY=VALUE"})


@dataclass
class HardwareFlags:
    machine_type: str = field(default="g2-standard-8", metadata={"help": "Compute Engine machine type"})
    accelerator_type: str = field(default="NVIDIA_L4", metadata={"help": "SDK AcceleratorType name or 'none'"})
    accelerator_count: int = field(default=1, metadata={"help": "accelerators per node"})
    replica_count: int = field(default=1, metadata={"help": "nodes; >1 adds a worker pool of N-1"})
    boot_disk_type: str = field(default="pd-ssd", metadata={"help": "boot disk type"})
    boot_disk_size_gb: int = field(default=100, metadata={"help": "boot disk size in GB"})


@dataclass
class SchedulingFlags:
    spot: bool = field(default=False, metadata={"help": "Spot VMs (scheduling strategy SPOT)"})
    restart_job_on_worker_restart: bool = field(default=False, metadata={"help": (
        "restart the whole job when a worker restarts")})
    timeout: str | None = field(default=None, metadata={"help": "max run time: seconds or 90m / 24h / 7d"})


@dataclass
class TrainingFlags:
    env: list[str] | None = field(default=None, metadata={"help": "plain env var (no credentials; repeatable)",
                                                          "metavar": "NAME=VALUE"})
    secret_env: list[str] | None = field(default=None, metadata={"help": (
        "env var resolved from Secret Manager at container start; only the name enters the spec (repeatable)"),
        "metavar": "NAME=projects/P/secrets/S/versions/V"})
    checkpoint_artifact: str | None = field(default=None, metadata={"help": "W&B checkpoint artifact to resume from"})
    checkpoint_store: str = field(default="${AIP_CHECKPOINT_DIR}", metadata={"help": (
        "checkpoint store URI for the trainer (the default is the job's AIP_CHECKPOINT_DIR; 'none' to omit)")})
    no_auto_resume: bool = field(default=False, metadata={"help": "do not add --resume_from_checkpoint auto"})


@dataclass
class RunFlags:
    dry_run: bool = field(default=False, metadata={"help": "print the job spec as JSON; call nothing"})
    wait: bool = field(default=False, metadata={"help": "block until the job finishes, logging its state"})


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dylora_moe.config_file import add_config_flag

    submit = subparsers.add_parser("submit", help="submit a training job to a cloud platform")
    platforms = submit.add_subparsers(dest="platform", metavar="PLATFORM")
    submit.set_defaults(func=lambda args: (submit.print_help(), 2)[1])
    p = platforms.add_parser(
        "vertex",
        help="Vertex AI CustomJob",
        description="Build (and submit) a Vertex AI CustomJob running `dylora-moe train <training args>` in "
        "the container. Auto-resume and a checkpoint store under AIP_CHECKPOINT_DIR are added by default.",
        usage="dylora-moe submit vertex [flags] -- <training args>",
    )
    add_config_flag(p)
    for title, flags in (("where", WhereFlags), ("hardware", HardwareFlags), ("scheduling", SchedulingFlags),
                         ("training", TrainingFlags)):
        add_dataclass_flags(p.add_argument_group(title), flags)
    add_dataclass_flags(p, RunFlags)
    p.add_argument("training_args", nargs="*", help="arguments for `dylora-moe train`, after --")
    p.set_defaults(func=run_vertex)


def options_from_args(args: argparse.Namespace) -> VertexJobOptions:
    """argparse namespace -> VertexJobOptions (UserError for missing or malformed flags)."""
    from dylora_moe.cloud.vertex_spec import VertexJobOptions

    missing = [f for f in ("project", "staging_bucket", "image_uri") if not getattr(args, f)]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise UserError(
            f"submit vertex: missing {flags}; pass them (the project may also come from GOOGLE_CLOUD_PROJECT)"
        )
    store = None if args.checkpoint_store.lower() in ("", "none") else args.checkpoint_store
    return VertexJobOptions(
        project=args.project,
        region=args.region,
        staging_bucket=args.staging_bucket,
        image_uri=args.image_uri,
        display_name=args.display_name,
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count,
        replica_count=args.replica_count,
        boot_disk_type=args.boot_disk_type,
        boot_disk_size_gb=args.boot_disk_size_gb,
        spot=args.spot,
        restart_job_on_worker_restart=args.restart_job_on_worker_restart,
        timeout_s=parse_duration(args.timeout) if args.timeout else None,
        service_account=args.service_account,
        labels=_pairs(args.label, "--label"),
        base_output_dir=args.base_output_dir,
        training_args=list(args.training_args),
        env=_pairs(args.env, "--env"),
        secret_env=_pairs(args.secret_env, "--secret-env"),
        checkpoint_artifact=args.checkpoint_artifact,
        auto_resume=not args.no_auto_resume,
        checkpoint_store=store,
    )


def check_training_args(training_args: list[str]) -> None:
    """The arguments after `--` parse as `dylora-moe train`'s: a typo would otherwise fail in the container,
    after the job was scheduled and a (spot) machine started."""
    import contextlib
    import io

    from dylora_moe.cli import build_parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            build_parser().parse_args(["train", *training_args])
    except SystemExit:
        detail = (errors.getvalue().strip().splitlines() or ["invalid"])[-1].split("error: ", 1)[-1]
        raise UserError(f"submit vertex: the arguments after -- are not valid for `dylora-moe train` ({detail}); "
                        "see `dylora-moe train --help`") from None


def run_vertex(args: argparse.Namespace) -> int:
    from dylora_moe.cloud.vertex_spec import build_custom_job, job_spec_dict

    options = options_from_args(args)
    check_training_args(options.training_args)
    credentials = None
    if args.dry_run:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # building the spec needs no identity; nothing is sent
    job = build_custom_job(options, credentials=credentials)
    if args.dry_run:
        print(json.dumps(job_spec_dict(job), indent=2, sort_keys=True))
        return 0
    from dylora_moe.cloud.vertex_submit import submit_job

    submit_job(job, options, wait=args.wait, out=sys.stdout)
    return 0

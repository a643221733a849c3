"""`dylora-moe submit vertex [flags] -- <training args>`: a thin layer over `vertex_spec`/`vertex_submit`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING

from dylora_moe.errors import UserError

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
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
    g = p.add_argument_group("where")
    g.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"), help="GCP project id")
    g.add_argument("--region", default=os.environ.get("GOOGLE_CLOUD_REGION", "us-central1"))
    g.add_argument("--staging-bucket", help="gs://bucket for job outputs (required)")
    g.add_argument("--image-uri", help="training image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/dylora-moe:TAG")
    g.add_argument("--display-name", default="dylora-moe-train")
    g.add_argument("--base-output-dir", help="default: <staging-bucket>/dylora-moe/<display-name>")
    g.add_argument("--service-account", help="service account email the job runs as")
    g.add_argument("--label", action="append", metavar="KEY=VALUE", help="job label (repeatable)")
    h = p.add_argument_group("hardware")
    h.add_argument("--machine-type", default="g2-standard-8")
    h.add_argument("--accelerator-type", default="NVIDIA_L4", help="SDK AcceleratorType name or 'none'")
    h.add_argument("--accelerator-count", type=int, default=1)
    h.add_argument("--replica-count", type=int, default=1, help="nodes; >1 adds a worker pool of N-1")
    h.add_argument("--boot-disk-type", default="pd-ssd")
    h.add_argument("--boot-disk-size-gb", type=int, default=100)
    s = p.add_argument_group("scheduling")
    s.add_argument("--spot", action="store_true", help="Spot VMs (scheduling strategy SPOT)")
    s.add_argument("--restart-job-on-worker-restart", action="store_true")
    s.add_argument("--timeout", type=str, help="max run time: seconds or 90m / 24h / 7d")
    t = p.add_argument_group("training")
    t.add_argument("--env", action="append", metavar="NAME=VALUE", help="plain env var (no credentials)")
    t.add_argument(
        "--secret-env",
        action="append",
        metavar="NAME=projects/P/secrets/S/versions/V",
        help="env var resolved from Secret Manager at container start; only the name enters the spec",
    )
    t.add_argument("--checkpoint-artifact", help="W&B checkpoint artifact to resume from")
    t.add_argument(
        "--checkpoint-store",
        default="${AIP_CHECKPOINT_DIR}",
        help="checkpoint store URI for the trainer (default: the job's AIP_CHECKPOINT_DIR; 'none' to omit)",
    )
    t.add_argument("--no-auto-resume", action="store_true", help="do not add --resume_from_checkpoint auto")
    p.add_argument("--dry-run", action="store_true", help="print the job spec as JSON; call nothing")
    p.add_argument("--wait", action="store_true", help="block until the job finishes, logging its state")
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


def run_vertex(args: argparse.Namespace) -> int:
    from dylora_moe.cloud.vertex_spec import build_custom_job, job_spec_dict

    options = options_from_args(args)
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

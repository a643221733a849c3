"""Build a Vertex AI CustomJob for `dylora-moe train` from plain options.

Why here and not in a script: resuming after a spot preemption must need no code edit, so the job's training
arguments get `--resume_from_checkpoint auto` and a checkpoint store under the job's own `AIP_CHECKPOINT_DIR`
by default, and secrets go in as Secret Manager names only (see `cloud/secrets.py`).
Building a job needs no credentials and makes no network call; `submit_job` in `vertex_submit.py` sends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dylora_moe.cloud.secrets import check_env_name, looks_secret, parse_secret_ref, secret_env_name
from dylora_moe.errors import UserError

if TYPE_CHECKING:  # heavy SDK import only when a job is actually built
    from google.auth.credentials import Credentials
    from google.cloud import aiplatform

# Placeholder the entrypoint expands at container start (Vertex sets the variable in the container env).
CHECKPOINT_DIR_PLACEHOLDER = "${AIP_CHECKPOINT_DIR}"
NPROC_ENV = "DYLORA_NPROC_PER_NODE"
NO_CREDENTIALS = (
    "no Google Cloud credentials found ({exc}); run `gcloud auth application-default login` or set "
    "GOOGLE_APPLICATION_CREDENTIALS, or use --dry-run to only print the job spec"
)
RESUME_FLAGS = ("--resume_from_checkpoint", "--auto_resume", "--no_auto_resume")


@dataclass
class VertexJobOptions:
    """Everything `dylora-moe submit vertex` can set; defaults give one on-demand L4 GPU node."""

    project: str
    region: str
    staging_bucket: str
    image_uri: str
    display_name: str = "dylora-moe-train"
    machine_type: str = "g2-standard-8"
    accelerator_type: str | None = "NVIDIA_L4"
    accelerator_count: int = 1
    replica_count: int = 1
    boot_disk_type: str = "pd-ssd"
    boot_disk_size_gb: int = 100
    spot: bool = False
    restart_job_on_worker_restart: bool = False
    timeout_s: int | None = None
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    base_output_dir: str | None = None
    training_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # NAME -> Secret Manager resource name
    checkpoint_artifact: str | None = None
    auto_resume: bool = True
    checkpoint_store: str | None = CHECKPOINT_DIR_PLACEHOLDER


def valid_accelerator_types() -> list[str]:
    """Accelerator names the installed SDK knows (the API's AcceleratorType enum, minus UNSPECIFIED)."""
    from google.cloud.aiplatform_v1.types import AcceleratorType

    return [m.name for m in AcceleratorType if m.name != "ACCELERATOR_TYPE_UNSPECIFIED"]


def validate_accelerator(accelerator_type: str | None, count: int) -> str | None:
    """Return the canonical enum name (None for CPU-only); UserError listing valid names on a typo."""
    if count < 0:
        raise UserError(f"--accelerator-count must be >= 0, got {count}")
    if accelerator_type is None or accelerator_type.lower() in ("", "none"):
        if count:
            raise UserError(f"--accelerator-count {count} needs --accelerator-type; pass one or use count 0")
        return None
    name = accelerator_type.strip().upper()
    valid = valid_accelerator_types()
    if name not in valid:
        raise UserError(
            f"unknown accelerator type {accelerator_type!r}; expected one of: {', '.join(valid)} "
            f"(or 'none' for CPU only)"
        )
    if count < 1:
        raise UserError(f"--accelerator-type {name} needs --accelerator-count >= 1, got {count}")
    return name


_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def validate_labels(labels: dict[str, str]) -> None:
    """Vertex's label rules (lowercase letters, digits, _ and -; keys start with a letter; <= 63 chars)."""
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise UserError(
                f"--label {key}={value}: labels must be lowercase letters, digits, '_' or '-', at most 63 "
                "characters, and keys must start with a letter; e.g. --label team=ml"
            )


def validate_region(region: str) -> None:
    """A region the installed SDK supports (it would otherwise raise with an unsorted set dump)."""
    from google.cloud.aiplatform import utils

    try:
        utils.validate_region(region)
    except ValueError:
        from google.cloud.aiplatform.constants import base as constants

        raise UserError(
            f"unknown Vertex AI region {region!r}; expected one of: {', '.join(sorted(constants.SUPPORTED_REGIONS))}"
        ) from None


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def container_args(options: VertexJobOptions) -> list[str]:
    """Training args for the container: the user's, plus auto-resume, store and artifact defaults."""
    args = list(options.training_args)
    if options.auto_resume and not any(_has_flag(args, f) for f in RESUME_FLAGS):
        args += ["--resume_from_checkpoint", "auto"]
    if options.checkpoint_store and not _has_flag(args, "--checkpoint_store"):
        args += ["--checkpoint_store", options.checkpoint_store]
    if options.checkpoint_artifact:
        if _has_flag(args, "--wandb_checkpoint_artifact"):
            raise UserError(
                "--checkpoint-artifact and a --wandb_checkpoint_artifact training argument were both given; "
                "keep one of them"
            )
        args += ["--wandb_checkpoint_artifact", options.checkpoint_artifact]
    return args


def container_env(options: VertexJobOptions) -> list[dict[str, str]]:
    """Plain env vars + secret *names*; refuses literal credentials so they never land in the job spec."""
    env: dict[str, str] = {}
    for name, value in options.env.items():
        check_env_name(name, "--env")
        if looks_secret(name):
            raise UserError(
                f"--env {name}=…: refusing to put a credential value into the job spec (anyone who can "
                f"describe the job could read it); store it in Secret Manager and pass "
                f"--secret-env {name}=projects/PROJECT/secrets/SECRET/versions/latest"
            )
        env[name] = value
    for name, resource in options.secret_env.items():
        name, resource = parse_secret_ref(f"{name}={resource}")
        env[secret_env_name(name)] = resource
    env.setdefault(NPROC_ENV, str(max(1, options.accelerator_count)))
    return [{"name": k, "value": v} for k, v in env.items()]


def worker_pool_specs(options: VertexJobOptions) -> list[dict[str, Any]]:
    """Pool 0: the chief (1 replica); pool 1: the other `replica_count - 1` nodes, same machine."""
    if options.replica_count < 1:
        raise UserError(f"--replica-count must be >= 1, got {options.replica_count}")
    accelerator = validate_accelerator(options.accelerator_type, options.accelerator_count)
    machine: dict[str, Any] = {"machine_type": options.machine_type}
    if accelerator:
        machine.update(accelerator_type=accelerator, accelerator_count=options.accelerator_count)
    pool = {
        "machine_spec": machine,
        "disk_spec": {"boot_disk_type": options.boot_disk_type, "boot_disk_size_gb": options.boot_disk_size_gb},
        "container_spec": {
            "image_uri": options.image_uri,
            "args": container_args(options),
            "env": container_env(options),
        },
    }
    pools = [{**pool, "replica_count": 1}]
    if options.replica_count > 1:
        pools.append({**pool, "replica_count": options.replica_count - 1})
    return pools


def default_base_output_dir(options: VertexJobOptions) -> str:
    """Stable per display name, so a re-submitted job finds the previous job's checkpoints."""
    bucket = options.staging_bucket.rstrip("/")
    return f"{bucket}/dylora-moe/{options.display_name}"


def scheduling_kwargs(options: VertexJobOptions) -> dict[str, Any]:
    """Keyword arguments for `CustomJob.submit` (also applied to the spec so --dry-run shows them)."""
    from google.cloud.aiplatform_v1.types import Scheduling

    if options.timeout_s is not None and options.timeout_s <= 0:
        raise UserError(f"--timeout must be positive, got {options.timeout_s} s")
    return {
        "service_account": options.service_account,
        "timeout": options.timeout_s,
        "restart_job_on_worker_restart": options.restart_job_on_worker_restart,
        "scheduling_strategy": Scheduling.Strategy.SPOT if options.spot else None,
    }


def _apply_scheduling(job: aiplatform.CustomJob, kwargs: dict[str, Any]) -> None:
    """Mirror what `CustomJob.submit` sets, so the dry-run JSON is the spec that would be sent."""
    from google.cloud.aiplatform_v1.types import Scheduling
    from google.protobuf import duration_pb2

    spec = job.job_spec
    if kwargs["service_account"]:
        spec.service_account = kwargs["service_account"]
    if kwargs["timeout"] or kwargs["restart_job_on_worker_restart"] or kwargs["scheduling_strategy"]:
        spec.scheduling = Scheduling(
            timeout=duration_pb2.Duration(seconds=kwargs["timeout"]) if kwargs["timeout"] else None,
            restart_job_on_worker_restart=kwargs["restart_job_on_worker_restart"],
            strategy=kwargs["scheduling_strategy"],
        )


def build_custom_job(options: VertexJobOptions, credentials: Credentials | None = None) -> aiplatform.CustomJob:
    """Construct (not submit) the CustomJob; no network call. `credentials=None` means ADC at submit time."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import aiplatform

    if not options.staging_bucket.startswith("gs://"):
        raise UserError(f"--staging-bucket must be a gs:// URI, got {options.staging_bucket!r}")
    validate_region(options.region)
    validate_labels(options.labels)
    pools = worker_pool_specs(options)
    kwargs = scheduling_kwargs(options)
    try:
        job = aiplatform.CustomJob(
            display_name=options.display_name,
            worker_pool_specs=pools,
            base_output_dir=options.base_output_dir or default_base_output_dir(options),
            project=options.project,
            location=options.region,
            credentials=credentials,
            labels=dict(options.labels) or None,
            staging_bucket=options.staging_bucket,
        )
    except ValueError as exc:  # anything else the SDK checks
        raise UserError(f"invalid Vertex AI job settings: {exc}") from exc
    except DefaultCredentialsError as exc:
        raise UserError(NO_CREDENTIALS.format(exc=" ".join(str(exc).split()))) from exc
    _apply_scheduling(job, kwargs)
    return job


def job_spec_dict(job: aiplatform.CustomJob) -> dict[str, Any]:
    """The JSON-ready job spec (what `--dry-run` prints)."""
    return job.to_dict()

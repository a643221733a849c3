"""Vertex AI CustomJob spec built offline (anonymous credentials) and compared field by field."""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("google.cloud.aiplatform")

from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import aiplatform  # noqa: E402
from google.cloud.aiplatform import initializer  # noqa: E402

from dylora_moe.cloud.vertex_spec import VertexJobOptions, build_custom_job, container_args  # noqa: E402
from dylora_moe.errors import UserError  # noqa: E402

SECRET_VALUE = "wandb-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def offline_vertex(monkeypatch):
    """No socket may connect; aiplatform.init's global state is undone after each test."""

    def refuse(self, address):
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    saved = dict(vars(initializer.global_config))  # aiplatform.init is bound to this very object
    aiplatform.init(
        project="proj-1", location="europe-west4", staging_bucket="gs://bkt", credentials=AnonymousCredentials()
    )
    yield
    vars(initializer.global_config).clear()
    vars(initializer.global_config).update(saved)


def _options(**overrides) -> VertexJobOptions:
    base = dict(
        project="proj-1",
        region="europe-west4",
        staging_bucket="gs://bkt",
        image_uri="europe-west4-docker.pkg.dev/proj-1/dylora/dylora-moe:0.1.0",
        display_name="spot-run",
        machine_type="a2-highgpu-1g",
        accelerator_type="NVIDIA_TESLA_A100",
        accelerator_count=1,
        spot=True,
        restart_job_on_worker_restart=True,
        timeout_s=7 * 86400,
        service_account="trainer@proj-1.iam.gserviceaccount.com",
        labels={"team": "ml"},
        training_args=["--run_name", "r1", "--num_epochs", "10"],
        env={"TOKENIZERS_PARALLELISM": "false"},
        secret_env={"WANDB_API_KEY": "projects/proj-1/secrets/wandb/versions/3"},
        checkpoint_artifact="team/dylora/r1-checkpoint:latest",
    )
    base.update(overrides)
    return VertexJobOptions(**base)


def test_spot_job_spec_is_exactly_what_vertex_gets(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET_VALUE)  # a local key must never leak into the spec
    job = build_custom_job(_options())  # credentials come from aiplatform.init
    spec = job.to_dict()
    assert spec == {
        "displayName": "spot-run",
        "labels": {"team": "ml"},
        "jobSpec": {
            "baseOutputDirectory": {"outputUriPrefix": "gs://bkt/dylora-moe/spot-run"},
            "serviceAccount": "trainer@proj-1.iam.gserviceaccount.com",
            "scheduling": {"timeout": "604800s", "restartJobOnWorkerRestart": True, "strategy": "SPOT"},
            "workerPoolSpecs": [
                {
                    "machineSpec": {
                        "machineType": "a2-highgpu-1g",
                        "acceleratorType": "NVIDIA_TESLA_A100",
                        "acceleratorCount": 1,
                    },
                    "replicaCount": "1",
                    "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": 100},
                    "containerSpec": {
                        "imageUri": "europe-west4-docker.pkg.dev/proj-1/dylora/dylora-moe:0.1.0",
                        "args": [
                            "--run_name", "r1", "--num_epochs", "10",
                            "--resume_from_checkpoint", "auto",
                            "--checkpoint_store", "${AIP_CHECKPOINT_DIR}",
                            "--wandb_checkpoint_artifact", "team/dylora/r1-checkpoint:latest",
                        ],  # fmt: skip
                        "env": [
                            {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
                            {"name": "DYLORA_SECRET_WANDB_API_KEY", "value": "projects/proj-1/secrets/wandb/versions/3"},
                            {"name": "DYLORA_NPROC_PER_NODE", "value": "1"},
                        ],
                    },
                }
            ],
        },
    }
    dumped = json.dumps(spec)
    assert SECRET_VALUE not in dumped
    assert not any(e["name"] == "WANDB_API_KEY" for e in spec["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"])


def test_replicas_become_chief_pool_plus_worker_pool():
    spec = build_custom_job(_options(replica_count=3, accelerator_count=4, spot=False)).to_dict()
    pools = spec["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "2"]
    assert pools[0]["containerSpec"] == pools[1]["containerSpec"]
    assert pools[0]["machineSpec"] == pools[1]["machineSpec"] == {
        "machineType": "a2-highgpu-1g",
        "acceleratorType": "NVIDIA_TESLA_A100",
        "acceleratorCount": 4,
    }
    assert {"name": "DYLORA_NPROC_PER_NODE", "value": "4"} in pools[1]["containerSpec"]["env"]
    assert "strategy" not in spec["jobSpec"]["scheduling"]


def test_cpu_only_on_demand_job_has_no_accelerator_and_no_scheduling():
    opts = _options(accelerator_type="none", accelerator_count=0, spot=False, restart_job_on_worker_restart=False,
                    timeout_s=None, service_account=None, machine_type="n1-standard-4")  # fmt: skip
    spec = build_custom_job(opts).to_dict()
    assert spec["jobSpec"]["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "n1-standard-4"}
    assert "scheduling" not in spec["jobSpec"] and "serviceAccount" not in spec["jobSpec"]


@pytest.mark.parametrize(
    "user_args",
    [["--resume_from_checkpoint", "gs://b/ckpt-500"], ["--resume_from_checkpoint=none"], ["--auto_resume"]],
)
def test_user_resume_flag_is_kept_and_no_auto_resume_added(user_args):
    args = container_args(_options(training_args=user_args, checkpoint_artifact=None))
    assert args == [*user_args, "--checkpoint_store", "${AIP_CHECKPOINT_DIR}"]


def test_own_checkpoint_store_and_disabled_auto_resume():
    opts = _options(training_args=["--checkpoint_store", "gs://mine/ckpts"], auto_resume=False, checkpoint_artifact=None)
    assert container_args(opts) == ["--checkpoint_store", "gs://mine/ckpts"]
    assert container_args(_options(training_args=[], checkpoint_store=None, checkpoint_artifact=None)) == [
        "--resume_from_checkpoint",
        "auto",
    ]


def test_accelerator_typo_lists_valid_values():
    with pytest.raises(UserError) as err:
        build_custom_job(_options(accelerator_type="NVIDIA_TESLA_A10"))
    message = str(err.value)
    assert message.startswith("unknown accelerator type 'NVIDIA_TESLA_A10'; expected one of: NVIDIA_TESLA_K80, ")
    assert ", NVIDIA_L4, " in message and ", NVIDIA_TESLA_A100, " in message
    assert "ACCELERATOR_TYPE_UNSPECIFIED" not in message
    assert message.endswith(" (or 'none' for CPU only)")


def test_lowercase_accelerator_is_canonicalised():
    spec = build_custom_job(_options(accelerator_type="nvidia_l4")).to_dict()
    assert spec["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]["acceleratorType"] == "NVIDIA_L4"


@pytest.mark.parametrize("name", ["WANDB_API_KEY", "HF_TOKEN", "OPENAI_API_KEY"])
def test_literal_credential_in_env_is_refused(name):
    with pytest.raises(UserError) as err:
        build_custom_job(_options(env={name: SECRET_VALUE}))
    assert str(err.value) == (
        f"--env {name}=…: refusing to put a credential value into the job spec (anyone who can describe the job "
        f"could read it); store it in Secret Manager and pass --secret-env {name}=projects/PROJECT/secrets/"
        "SECRET/versions/latest"
    )
    assert SECRET_VALUE not in str(err.value)


def test_secret_env_must_be_a_resource_name_and_defaults_to_latest():
    with pytest.raises(UserError, match=r"^--secret-env HF_TOKEN=…: the value is not a Secret Manager resource"):
        build_custom_job(_options(secret_env={"HF_TOKEN": "hf_abcdef"}))
    spec = build_custom_job(_options(secret_env={"HF_TOKEN": "projects/p/secrets/hf"})).to_dict()
    env = spec["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]
    assert {"name": "DYLORA_SECRET_HF_TOKEN", "value": "projects/p/secrets/hf/versions/latest"} in env


def test_conflicting_artifact_flags_and_bad_labels_are_user_errors():
    with pytest.raises(UserError, match="--checkpoint-artifact and a --wandb_checkpoint_artifact"):
        container_args(_options(training_args=["--wandb_checkpoint_artifact", "a/b/c:v1"]))
    with pytest.raises(UserError) as err:
        build_custom_job(_options(labels={"Team": "ml"}))
    assert str(err.value) == (
        "--label Team=ml: labels must be lowercase letters, digits, '_' or '-', at most 63 characters, "
        "and keys must start with a letter; e.g. --label team=ml"
    )
    with pytest.raises(UserError) as err:
        build_custom_job(_options(region="mars-north1"))
    assert str(err.value).startswith("unknown Vertex AI region 'mars-north1'; expected one of: africa-south1, ")
    assert ", europe-west4, " in str(err.value)

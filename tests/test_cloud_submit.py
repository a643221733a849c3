"""`dylora-moe submit vertex`: --dry-run sends nothing; a real submit reaches the SDK's create_custom_job."""

from __future__ import annotations

import json
import socket
from unittest import mock

import pytest

pytest.importorskip("google.cloud.aiplatform")

from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import aiplatform  # noqa: E402
from google.cloud.aiplatform import initializer  # noqa: E402
from google.cloud.aiplatform import jobs as aip_jobs  # noqa: E402
from google.cloud.aiplatform.compat.services import job_service_client  # noqa: E402
from google.cloud.aiplatform_v1.types import CustomJob, JobState, Scheduling  # noqa: E402

from dylora_moe.cli import main  # noqa: E402

JOB_NAME = "projects/proj-1/locations/us-central1/customJobs/4242"
FLAGS = [
    "submit", "vertex",
    "--project", "proj-1", "--region", "us-central1", "--staging-bucket", "gs://bkt",
    "--image-uri", "us-central1-docker.pkg.dev/proj-1/dylora/dylora-moe:0.1.0",
    "--display-name", "run-a", "--machine-type", "g2-standard-24",
    "--accelerator-type", "NVIDIA_L4", "--accelerator-count", "2", "--replica-count", "2",
    "--spot", "--restart-job-on-worker-restart", "--timeout", "12h",
    "--service-account", "trainer@proj-1.iam.gserviceaccount.com", "--label", "team=ml",
    "--secret-env", "WANDB_API_KEY=projects/proj-1/secrets/wandb/versions/latest",
    "--checkpoint-artifact", "team/dylora/run-a-checkpoint:latest",
]  # fmt: skip
TRAIN = ["--", "--run_name", "run-a", "--num_epochs", "10"]
EXPECTED_ARGS = [
    "--run_name", "run-a", "--num_epochs", "10", "--resume_from_checkpoint", "auto",
    "--checkpoint_store", "${AIP_CHECKPOINT_DIR}", "--wandb_checkpoint_artifact", "team/dylora/run-a-checkpoint:latest",
]  # fmt: skip


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address):
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def vertex_init(no_network):
    """aiplatform.init with anonymous credentials (as the SDK's own tests do); undone afterwards."""
    saved = dict(vars(initializer.global_config))
    aiplatform.init(project="proj-1", location="us-central1", credentials=AnonymousCredentials())
    yield
    vars(initializer.global_config).clear()
    vars(initializer.global_config).update(saved)


@pytest.fixture
def create_custom_job_mock():
    with mock.patch.object(job_service_client.JobServiceClient, "create_custom_job") as create:
        create.return_value = CustomJob(name=JOB_NAME, display_name="run-a", state=JobState.JOB_STATE_PENDING)
        yield create


def test_dry_run_prints_spec_and_calls_nothing(no_network, create_custom_job_mock, capsys):
    # no aiplatform.init and no ADC: the dry run must use anonymous credentials by itself
    assert main([*FLAGS, "--dry-run", *TRAIN]) == 0
    create_custom_job_mock.assert_not_called()
    spec = json.loads(capsys.readouterr().out)
    assert spec["displayName"] == "run-a"
    assert spec["jobSpec"]["scheduling"] == {"timeout": "43200s", "restartJobOnWorkerRestart": True, "strategy": "SPOT"}
    pools = spec["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "1"]
    assert pools[1]["containerSpec"]["args"] == EXPECTED_ARGS
    assert pools[1]["containerSpec"]["env"] == [
        {"name": "DYLORA_SECRET_WANDB_API_KEY", "value": "projects/proj-1/secrets/wandb/versions/latest"},
        {"name": "DYLORA_NPROC_PER_NODE", "value": "2"},
    ]


def test_submit_sends_the_job_to_create_custom_job(vertex_init, create_custom_job_mock, capsys):
    assert main([*FLAGS, *TRAIN]) == 0
    create_custom_job_mock.assert_called_once()
    kwargs = create_custom_job_mock.call_args.kwargs
    assert kwargs["parent"] == "projects/proj-1/locations/us-central1"
    sent: CustomJob = kwargs["custom_job"]
    assert sent.display_name == "run-a" and dict(sent.labels) == {"team": "ml"}
    assert sent.job_spec.service_account == "trainer@proj-1.iam.gserviceaccount.com"
    assert sent.job_spec.scheduling.strategy == Scheduling.Strategy.SPOT
    assert sent.job_spec.scheduling.restart_job_on_worker_restart is True
    assert sent.job_spec.scheduling.timeout.total_seconds() == 43200
    assert sent.job_spec.base_output_directory.output_uri_prefix == "gs://bkt/dylora-moe/run-a"
    assert [p.replica_count for p in sent.job_spec.worker_pool_specs] == [1, 1]
    for pool in sent.job_spec.worker_pool_specs:
        assert pool.machine_spec.machine_type == "g2-standard-24"
        assert pool.machine_spec.accelerator_count == 2
        assert list(pool.container_spec.args) == EXPECTED_ARGS
        assert {e.name for e in pool.container_spec.env} == {"DYLORA_SECRET_WANDB_API_KEY", "DYLORA_NPROC_PER_NODE"}
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"submitted {JOB_NAME}"
    assert out[1].startswith("console: https://console.cloud.google.com/") and out[1].endswith("?project=proj-1")
    assert len(out) == 2  # non-blocking: no state polling


@pytest.mark.parametrize(
    ("final", "rc", "last_line"),
    [(JobState.JOB_STATE_SUCCEEDED, 0, "final state: JOB_STATE_SUCCEEDED"), (JobState.JOB_STATE_FAILED, 1, None)],
)
def test_wait_polls_until_a_final_state(vertex_init, create_custom_job_mock, monkeypatch, capsys, final, rc, last_line):
    monkeypatch.setattr(aip_jobs, "_JOB_WAIT_TIME", 0)
    states = [JobState.JOB_STATE_RUNNING, final]
    with mock.patch.object(job_service_client.JobServiceClient, "get_custom_job") as get:
        get.side_effect = [CustomJob(name=JOB_NAME, state=s) for s in states]
        assert main([*FLAGS, "--wait", *TRAIN]) == rc
    assert get.call_count == 2
    captured = capsys.readouterr()
    if last_line:
        assert captured.out.splitlines()[-1] == last_line
    else:
        assert captured.err.startswith(f"error: job {JOB_NAME} did not succeed: Job failed with:")
        assert captured.err.count("\n") == 1


def test_accelerator_typo_is_one_error_line(no_network, create_custom_job_mock, capsys):
    flags = [f if f != "NVIDIA_L4" else "NVIDIA_L40" for f in FLAGS]
    assert main([*flags, "--dry-run", *TRAIN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: unknown accelerator type 'NVIDIA_L40'; expected one of: NVIDIA_TESLA_K80, ")
    create_custom_job_mock.assert_not_called()


def test_training_arguments_that_train_would_refuse_are_one_line_before_submitting(no_network, create_custom_job_mock,
                                                                                  capsys):
    assert main([*FLAGS, "--dry-run", "--", "--run_name", "run-a", "--num_train_epochs", "10"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: submit vertex: the arguments after -- are not valid for `dylora-moe train` "
                                "(unrecognized arguments: --num_train_epochs 10); see `dylora-moe train --help`"]
    create_custom_job_mock.assert_not_called()


def test_literal_key_in_env_flag_is_refused(no_network, capsys):
    assert main([*FLAGS, "--env", "HF_TOKEN=hf_live_secret", "--dry-run", *TRAIN]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: --env HF_TOKEN=…: refusing to put a credential value into the job spec")
    assert "hf_live_secret" not in captured.err


def test_missing_required_flags_and_bad_timeout(no_network, monkeypatch, capsys):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    assert main(["submit", "vertex", "--dry-run", "--staging-bucket", "gs://b", "--", "--run_name", "x"]) == 2
    assert capsys.readouterr().err == (
        "error: submit vertex: missing --project, --image-uri; pass them (the project may also come from "
        "GOOGLE_CLOUD_PROJECT)\n"
    )
    assert main([*FLAGS, "--timeout", "2w", "--dry-run"]) == 2
    assert "expected seconds or a number with s/m/h/d" in capsys.readouterr().err


def test_submit_without_credentials_is_one_error_line(no_network, monkeypatch, create_custom_job_mock, capsys):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_adc(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_adc)
    saved = dict(vars(initializer.global_config))
    try:
        assert main([*FLAGS, *TRAIN]) == 2
    finally:
        vars(initializer.global_config).clear()
        vars(initializer.global_config).update(saved)
    assert capsys.readouterr().err == (
        "error: no Google Cloud credentials found (Your default credentials were not found.); run `gcloud auth "
        "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS, or use --dry-run to only print the job spec\n"
    )
    create_custom_job_mock.assert_not_called()

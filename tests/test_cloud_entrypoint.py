"""Container entrypoint: CLUSTER_SPEC -> torchrun argv, secrets from Secret Manager, exec without a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dylora_moe.cloud import entrypoint
from dylora_moe.cloud.cluster_spec import NodeInfo, parse_cluster_spec
from dylora_moe.errors import UserError

SECRET_VALUE = "wandb-live-0123456789abcdef"
RESOURCE = "projects/proj-1/secrets/wandb/versions/latest"
TWO_POOLS = {
    "cluster": {"workerpool0": ["cmle-chief-0:2222"], "workerpool1": ["cmle-worker-0:2222", "cmle-worker-1:2222"]},
    "environment": "cloud",
    "task": {"type": "workerpool1", "index": 1},
}


def _spec(task_type: str, index: int) -> str:
    return json.dumps({**TWO_POOLS, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(
    ("task_type", "index", "rank"), [("workerpool0", 0, 0), ("workerpool1", 0, 1), ("workerpool1", 1, 2)]
)
def test_two_pool_cluster_spec_gives_node_ranks(task_type, index, rank):
    assert parse_cluster_spec(_spec(task_type, index)) == NodeInfo("cmle-chief-0", 2222, rank, 3)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("not json", "CLUSTER_SPEC is not valid Vertex AI cluster JSON (JSONDecodeError: "),
        (json.dumps({"cluster": {}}), "CLUSTER_SPEC is not valid Vertex AI cluster JSON (KeyError: 'task')"),
        (_spec("workerpool2", 0), "CLUSTER_SPEC: this task is in workerpool2, which is not a training pool"),
        (_spec("workerpool1", 2), "CLUSTER_SPEC: task index 2 is outside workerpool1 (2 replicas)"),
    ],
)
def test_bad_cluster_spec_is_a_user_error(text, start):
    with pytest.raises(UserError) as err:
        parse_cluster_spec(text)
    assert str(err.value).startswith(start)


def test_multi_node_command_is_torchrun_with_node_rendezvous():
    env = {"CLUSTER_SPEC": _spec("workerpool1", 1), "DYLORA_NPROC_PER_NODE": "4"}
    command = entrypoint.build_command(["--run_name", "r1"], env, python="/py")
    assert command == [
        "torchrun", "--nnodes", "3", "--node_rank", "2", "--master_addr", "cmle-chief-0", "--master_port", "2222",
        "--nproc_per_node", "4", "-m", "dylora_moe", "train", "--run_name", "r1",
    ]  # fmt: skip
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")} == {
        "MASTER_ADDR": "cmle-chief-0",
        "MASTER_PORT": "2222",
        "RANK": "2",
        "WORLD_SIZE": "3",
    }


def test_single_process_runs_the_trainer_directly():
    single = {"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["h:2222"]}, "task": {"type": "workerpool0", "index": 0}}),
              "DYLORA_NPROC_PER_NODE": "1"}  # fmt: skip
    assert entrypoint.build_command(["--x", "1"], single, python="/py") == ["/py", "-m", "dylora_moe", "train", "--x", "1"]
    assert "RANK" not in single and "MASTER_ADDR" not in single
    local_gpus = {"DYLORA_NPROC_PER_NODE": "2"}
    assert entrypoint.build_command([], local_gpus, python="/py") == [
        "torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "dylora_moe", "train",
    ]  # fmt: skip


def test_checkpoint_dir_placeholder_is_expanded_and_required():
    env = {"AIP_CHECKPOINT_DIR": "gs://bkt/dylora-moe/run/checkpoints/"}
    args = ["--checkpoint_store", "${AIP_CHECKPOINT_DIR}", "--output_dir=$AIP_MODEL_DIRx", "--note", "$HOME"]
    with pytest.raises(UserError) as err:
        entrypoint.expand_vertex_vars(["--model=$AIP_MODEL_DIR"], env)
    assert str(err.value).startswith("the training arguments use ${AIP_MODEL_DIR} but AIP_MODEL_DIR is not set;")
    assert entrypoint.expand_vertex_vars(args, env) == [
        "--checkpoint_store", "gs://bkt/dylora-moe/run/checkpoints/", "--output_dir=$AIP_MODEL_DIRx", "--note", "$HOME",
    ]  # fmt: skip


class FakeSecretManager:
    """Stands in for google.cloud.secretmanager.SecretManagerServiceClient; records what was asked."""

    requested: list[str] = []

    def __init__(self, *args, **kwargs):
        pass

    def access_secret_version(self, request):
        FakeSecretManager.requested.append(request["name"])
        payload = type("Payload", (), {"data": (SECRET_VALUE + "\n").encode()})
        return type("Response", (), {"payload": payload})


@pytest.fixture
def fake_secret_manager(monkeypatch):
    from google.cloud import secretmanager

    FakeSecretManager.requested = []
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", FakeSecretManager)
    return FakeSecretManager


def test_secret_is_resolved_from_secret_manager_and_never_printed(fake_secret_manager, monkeypatch, capfd):
    calls = []
    monkeypatch.setattr(entrypoint.os, "execvpe", lambda file, argv, env: calls.append((file, argv, env)))
    env = {"DYLORA_SECRET_WANDB_API_KEY": RESOURCE, "DYLORA_NPROC_PER_NODE": "1"}
    assert entrypoint.main(["--run_name", "r1"], env=env) == 0
    assert fake_secret_manager.requested == [RESOURCE]
    assert env["WANDB_API_KEY"] == SECRET_VALUE  # trailing newline of `echo … | gcloud secrets create` dropped
    assert calls == [(sys.executable, [sys.executable, "-m", "dylora_moe", "train", "--run_name", "r1"], env)]
    out, err = capfd.readouterr()
    assert SECRET_VALUE not in out + err
    assert "[entrypoint] WANDB_API_KEY: from secret-manager" in err


def test_plain_env_var_wins_over_secret_manager(fake_secret_manager):
    env = {"DYLORA_SECRET_HF_TOKEN": "projects/p/secrets/hf/versions/2", "HF_TOKEN": "hf_local"}
    assert entrypoint.resolve_secrets(env) == {"HF_TOKEN": "environment"}
    assert env["HF_TOKEN"] == "hf_local" and fake_secret_manager.requested == []


def test_unreadable_secret_is_a_user_error_without_value():
    def denied(resource):
        raise PermissionError(f"403 Permission denied on resource {resource}")

    with pytest.raises(UserError) as err:
        entrypoint.resolve_secrets({"DYLORA_SECRET_WANDB_API_KEY": RESOURCE}, fetch=denied)
    assert str(err.value) == (
        f"could not read secret WANDB_API_KEY from {RESOURCE}: PermissionError: 403 Permission denied on resource "
        f"{RESOURCE}; check the name and grant the job's service account roles/secretmanager.secretAccessor"
    )


FAKE_TORCHRUN = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    keys = ["MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "WANDB_API_KEY"]
    with open(os.environ["DUMP"], "w") as f:
        json.dump({{"argv": sys.argv[1:], "pid": os.getpid(), "env": {{k: os.environ.get(k) for k in keys}}}}, f)
    """
)


def test_real_entrypoint_execs_torchrun_in_place(tmp_path: Path):
    """A real `python -m dylora_moe.cloud.entrypoint` process; a fake torchrun first on PATH dumps what it got."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    torchrun = bindir / "torchrun"
    torchrun.write_text(FAKE_TORCHRUN.format(python=sys.executable))
    torchrun.chmod(0o755)
    dump = tmp_path / "dump.json"
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "DUMP": str(dump),
        "CLUSTER_SPEC": _spec("workerpool0", 0),
        "DYLORA_NPROC_PER_NODE": "2",
        "AIP_CHECKPOINT_DIR": "gs://bkt/job/checkpoints/",
        "DYLORA_SECRET_WANDB_API_KEY": RESOURCE,
        "WANDB_API_KEY": SECRET_VALUE,  # plain value wins: no Secret Manager call (and no network) needed
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dylora_moe.cloud.entrypoint", "--run_name", "r1", "--checkpoint_store",
         "${AIP_CHECKPOINT_DIR}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = json.loads(dump.read_text())
    assert got["pid"] == proc.pid  # exec'd in place: no shell or wrapper process in between
    assert got["argv"] == [
        "--nnodes", "3", "--node_rank", "0", "--master_addr", "cmle-chief-0", "--master_port", "2222",
        "--nproc_per_node", "2", "-m", "dylora_moe", "train", "--run_name", "r1",
        "--checkpoint_store", "gs://bkt/job/checkpoints/",
    ]  # fmt: skip
    assert got["env"] == {
        "MASTER_ADDR": "cmle-chief-0",
        "MASTER_PORT": "2222",
        "RANK": "0",
        "WORLD_SIZE": "3",
        "WANDB_API_KEY": SECRET_VALUE,
    }
    assert SECRET_VALUE not in out + err
    assert "[entrypoint] WANDB_API_KEY: from environment" in err


def test_entrypoint_user_error_exits_2_with_one_line(tmp_path: Path):
    env = {**os.environ, "CLUSTER_SPEC": "{broken", "DYLORA_NPROC_PER_NODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dylora_moe.cloud.entrypoint", "--run_name", "r1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: CLUSTER_SPEC is not valid Vertex AI cluster JSON (JSONDecodeError: ")
    assert proc.stderr.count("\n") == 1


def test_dockerfile_entrypoint_is_exec_form_on_a_torch_2_6_plus_base():
    dockerfile = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    entry = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert len(entry) == 1
    assert json.loads(entry[0][len("ENTRYPOINT ") :]) == ["python", "-m", "dylora_moe.cloud.entrypoint"]
    base = next(line for line in lines if line.startswith("ARG BASE_IMAGE="))
    torch_version = base.split(":", 1)[1].split("-", 1)[0]  # pytorch/pytorch:<torch>-cuda…
    assert tuple(int(p) for p in torch_version.split(".")[:2]) >= (2, 6)  # transformers 5 disables older torch
    assert 'RUN pip install ".[all]"' in lines


def test_missing_torchrun_is_reported_not_a_traceback(tmp_path: Path):
    env = {**os.environ, "PATH": str(tmp_path), "DYLORA_NPROC_PER_NODE": "2"}  # no torchrun anywhere on PATH
    proc = subprocess.run(
        [sys.executable, "-m", "dylora_moe.cloud.entrypoint", "--run_name", "r1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 127
    assert proc.stderr.splitlines()[-1] == (
        "error: could not start torchrun: No such file or directory; is torch installed in the image?"
    )

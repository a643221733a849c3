"""`--config FILE|DIR|URI`: YAML/JSON files of option names, command-line flags win, one error line per bad key or
value, and a run's run_config.json (or its output dir, checkpoint, store) re-runs that run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import one_error_line, run_cli

from dylora_moe.cli import build_parser, main, parse_args
from dylora_moe.continual.args import continual_config_from_args
from dylora_moe.training.cli import config_from_namespace
from dylora_moe.training.config import TrainConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SUBMIT_EXAMPLES = {"vertex-spot.yaml"}  # the rest are `train` configs


def _parse(*argv: str):
    return parse_args(build_parser(), [str(a) for a in argv])


def _train_config(*argv) -> TrainConfig:
    return config_from_namespace(_parse("train", *argv))


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_values_and_command_line_precedence(tmp_path):
    config = _write(tmp_path, "run.yaml", """
max_steps: 7
learning_rate: 2.0e-3
bf16: true
target_modules: [q_proj, v_proj]
group_by_length: false
data:
  datasets: [stdlib:text, stdlib:math]
  max_seq_length: 64
""")
    cfg = _train_config("--config", config, "--max_steps", "3", "--max-seq-length", "32")
    assert (cfg.max_steps, cfg.learning_rate, cfg.bf16, cfg.target_modules, cfg.group_by_length) == \
           (3, 2e-3, True, "q_proj,v_proj", False)
    assert (cfg.data.datasets, cfg.data.max_seq_length) == ("stdlib:text,stdlib:math", 32)
    assert _train_config() == TrainConfig()  # no --config: the defaults, untouched by the file read before


def test_json_config_with_continual_options_and_flag_names(tmp_path):
    config = _write(tmp_path, "run.json", json.dumps({
        "mode": "continual", "seed": 3, "auto_resume": True,
        "continual": {"skills": "stdlib:text,stdlib:math", "train_all_experts": True, "novelty_reference": "none"},
    }))
    args = _parse("train", "--config", config, "--seed", "5")
    cfg, ccfg = config_from_namespace(args), continual_config_from_args(args)
    assert (args.mode, cfg.seed, cfg.data.seed, cfg.resume_from_checkpoint) == ("continual", 5, 5, "auto")
    assert (ccfg.skills, ccfg.freeze_experts, ccfg.reference) == ("stdlib:text,stdlib:math", False, "none")


def test_unknown_key_is_one_line_naming_the_closest_keys(tmp_path, capsys):
    config = _write(tmp_path, "typo.yaml", "lerning_rate: 0.1\n")
    assert main(["train", "--config", config]) == 2
    assert capsys.readouterr().err == (f"error: --config {config}: unknown key 'lerning_rate'; did you mean "
                                       "learning_rate or seed_learning_rate? (`dylora-moe train --help` lists the "
                                       "options)\n")


def test_a_secret_named_key_is_refused_without_echoing_its_value(tmp_path, capsys):
    config = _write(tmp_path, "secret.yaml", "wandb_api_key: sk-live-0123456789\n")
    assert main(["train", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'wandb_api_key'" in err and "sk-live" not in err
    assert "hf_token" not in TrainConfig().run_config(hf_token="hf_live", group_by_length=True)


@pytest.mark.parametrize("line, message", [
    ("max_steps: ten", "max_steps: 'ten' is not an integer"),
    ("learning_rate: [1, 2]", "learning_rate: [1, 2] is not a number"),
    ("bf16: 'yes'", "bf16: 'yes' is not true or false"),
    ("group_by_length: 1", "group_by_length: 1 is not true or false or null"),
    ("mixing: zip", "mixing: 'zip' is not one of concat, interleave"),
])
def test_wrong_type_is_one_line_naming_key_value_and_type(tmp_path, capsys, line, message):
    config = _write(tmp_path, "bad.yaml", line + "\n")
    assert main(["train", "--config", config]) == 2
    assert capsys.readouterr().err == f"error: --config {config}: {message}; fix its value in the file\n"


def test_unreadable_configs_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file; expected a YAML or JSON config file" in capsys.readouterr().err
    assert main(["train", "--config", _write(tmp_path, "list.yaml", "- 1\n- 2\n")]) == 2
    assert "expected a mapping of option names to values, got a list" in capsys.readouterr().err
    assert main(["train", "--config", _write(tmp_path, "broken.json", '{"max_steps": 2,}')]) == 2
    assert "not valid JSON at line 1" in capsys.readouterr().err


def test_eval_and_generate_read_their_options_from_a_file(tmp_path):
    config = _write(tmp_path, "eval.yaml", "model: ckpt\nbenchmarks: [humaneval, mbpp]\nn: 10\ntemperature: 0.8\n"
                                           "load_in_4bit: true\n")
    args = _parse("eval", "--config", config, "--n", "20")  # --model is required, and given by the file
    assert (args.model, args.benchmarks, args.n, args.temperature, args.load_in_4bit) == \
           ("ckpt", "humaneval,mbpp", 20, 0.8, True)
    prompt_file = _write(tmp_path, "prompt.txt", "Reverse a list")
    config = _write(tmp_path, "generate.yaml", "model: ckpt\nprompt: from the file\nmax_new_tokens: 16\n")
    args = _parse("generate", "--config", config, "--prompt-file", prompt_file)  # the command line's source wins
    assert (args.prompt, args.prompt_file, args.max_new_tokens) == (None, prompt_file, 16)
    assert _parse("generate", "--config", config).prompt == "from the file"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir()))
def test_every_example_resolves_to_a_valid_config(example, monkeypatch, capsys):
    path = EXAMPLES / example
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # hub datasets are checked, not downloaded
        monkeypatch.delenv(name, raising=False)
    if example in SUBMIT_EXAMPLES:
        assert main(["submit", "vertex", "--config", str(path), "--dry-run"]) == 0
        spec = json.loads(capsys.readouterr().out)
        container = spec["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
        assert spec["jobSpec"]["scheduling"]["strategy"] == "SPOT"
        train_args = container["args"]
        assert train_args[-4:] == ["--resume_from_checkpoint", "auto", "--checkpoint_store", "${AIP_CHECKPOINT_DIR}"]
        args = _parse("train", *train_args)
    else:
        args = _parse("train", "--config", path)
    config_from_namespace(args).check()
    if args.mode == "continual":
        continual_config_from_args(args).check()


@pytest.mark.slow
def test_tiny_example_trains_and_its_run_config_re_runs_it(tmp_path, monkeypatch):
    fast = ("--max_steps", "2", "--save_steps", "2", "--max_examples_per_dataset", "48", "--max_seq_length", "64",
            "--eval_fraction", "0.25")
    out1, store = tmp_path / "out1", tmp_path / "store"
    proc = run_cli("train", "--config", str(EXAMPLES / "tiny.yaml"), "--output_dir", str(out1),
                   "--checkpoint_store", str(store), *fast)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved_file = out1 / "checkpoint-2" / "run_config.json"
    saved = json.loads(saved_file.read_text())
    assert (saved["model_name"], saved["max_steps"], saved["learning_rate"], saved["data"]["max_seq_length"]) == \
           ("tiny", 2, 1e-3, 64)  # the file's values and the command line's overrides, resolved

    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))  # where a store version is downloaded
    for source in (saved_file, out1, out1 / "checkpoint-2", store, f"{store}:latest"):
        assert _train_config("--config", source).run_config(group_by_length=saved["group_by_length"]) == saved

    out2 = tmp_path / "out2"
    proc = run_cli("train", "--config", str(saved_file), "--output_dir", str(out2),
                   "--checkpoint_store", str(tmp_path / "store2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = json.loads((out2 / "checkpoint-2" / "run_config.json").read_text())
    assert {**rerun, "output_dir": None, "checkpoint_store": None} == \
           {**saved, "output_dir": None, "checkpoint_store": None}


def test_config_of_a_directory_without_a_run_is_one_line(tmp_path):
    proc = run_cli("train", "--config", str(tmp_path))
    assert one_error_line(proc).startswith(f"error: {tmp_path} is not a checkpoint, an output directory")
    assert proc.returncode == 2


@pytest.mark.slow
def test_continual_example_runs_and_its_output_dir_re_runs_it(tmp_path):
    from micro import save_micro_base

    out = tmp_path / "out"
    assert main(["train", "--config", str(EXAMPLES / "continual-tiny.yaml"), "--model_name",
                 save_micro_base(tmp_path / "base"), "--output_dir", str(out), "--skills", "stdlib:text,stdlib:math",
                 "--seed_steps", "0", "--max_steps", "1", "--save_steps", "1", "--max_examples_per_dataset", "16",
                 "--eval_fraction", "0.25", "--train_batch_size", "2", "--novelty_threshold", "1.0",
                 "--embedding_samples", "4"]) == 0
    saved = json.loads((out / "run_config.json").read_text())
    assert (saved["mode"], saved["continual"]["skills"], saved["continual"]["replay"]) == \
           ("continual", "stdlib:text,stdlib:math", 0.1)  # the command line's skills, the file's replay
    args = _parse("train", "--config", out)
    cfg, ccfg = config_from_namespace(args), continual_config_from_args(args)
    assert args.mode == "continual"
    assert cfg.run_config(mode=args.mode, continual=ccfg.to_dict()) == saved


def test_numbers_written_as_yaml_text_are_read_as_on_the_command_line(tmp_path):
    config = _write(tmp_path, "numbers.yaml", "learning_rate: 1e-3\nmax_steps: '12'\nlora_alpha: 16\n")
    cfg = _train_config("--config", config)  # YAML 1.1 reads 1e-3 (no dot) as a string
    assert (cfg.learning_rate, cfg.max_steps, cfg.lora_alpha) == (1e-3, 12, 16.0)

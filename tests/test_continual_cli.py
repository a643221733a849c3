"""`dylora-moe train --mode continual`: flags reach ContinualConfig; errors are one line; a micro run works."""

from __future__ import annotations

import json

from micro import save_micro_base

from dylora_moe.cli import build_parser, main
from dylora_moe.continual.args import continual_config_from_args


def test_flags_reach_the_continual_config():
    args = build_parser().parse_args(
        ["train", "--mode", "continual", "--skills", "stdlib:text,mbpp", "--novelty-threshold", "0.5",
         "--seed_steps", "3", "--seed_learning_rate", "0.01", "--train_all_experts", "--novelty_reference", "none"])
    c = continual_config_from_args(args)
    assert (c.skills, c.novelty_threshold, c.seed_steps, c.seed_learning_rate, c.freeze_experts, c.reference) == (
        "stdlib:text,mbpp", 0.5, 3, 0.01, False, "none")
    assert build_parser().parse_args(["train"]).mode == "joint"
    defaults = continual_config_from_args(build_parser().parse_args(["train", "--mode", "continual"]))
    assert (defaults.routing_supervision, defaults.prototype_routing) == (1.0, 1.0)
    assert (defaults.novelty_alpha, defaults.novelty_samples, defaults.novelty_threshold) == (0.01, 64, None)
    test = continual_config_from_args(build_parser().parse_args(
        ["train", "--mode", "continual", "--novelty-alpha", "0.05", "--novelty_samples", "16"]))
    assert (test.novelty_alpha, test.novelty_samples) == (0.05, 16)
    off = continual_config_from_args(build_parser().parse_args(
        ["train", "--mode", "continual", "--prototype-routing", "0", "--routing_supervision", "0.5"]))
    assert (off.routing_supervision, off.prototype_routing) == (0.5, 0.0)


def test_router_input_flag_is_checked_in_one_line(capsys, tmp_path):
    code = main(["train", "--router_input", "topic", "--output_dir", str(tmp_path), "--report_to", "none"])
    assert code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --router_input must be token, context or sequence, got 'topic'")


def test_missing_skills_is_one_error_line(capsys, tmp_path):
    code = main(["train", "--mode", "continual", "--output_dir", str(tmp_path), "--report_to", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1] == "error: --mode continual needs --skills, e.g. --skills stdlib:text,stdlib:math"


def test_cli_runs_a_two_skill_sequence(tmp_path):
    base = save_micro_base(tmp_path / "base")
    out = tmp_path / "out"
    code = main(["train", "--mode", "continual", "--skills", "stdlib:text,stdlib:math", "--model_name", base,
                 "--output_dir", str(out), "--max_steps", "1", "--save_steps", "1", "--max_examples_per_dataset",
                 "16", "--max_seq_length", "256", "--eval_fraction", "0.25", "--train_batch_size", "2", "--novelty_threshold", "1.0",
                 "--embedding_samples", "4", "--report_to", "none"])
    assert code == 0
    state = json.loads((out / "continual_state.json").read_text())
    assert (state["current"], state["num_experts"], state["total_steps"]) == (2, 2, 2)
    assert [r["expert"] for r in state["records"]] == [0, 1]

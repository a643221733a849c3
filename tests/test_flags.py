"""flags.py: one generator builds the train, data and continual flags from the configs' field metadata."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from dylora_moe.cli import build_parser
from dylora_moe.continual.config import ContinualConfig
from dylora_moe.data.config import DataConfig
from dylora_moe.flags import add_dataclass_flags, config_from_args, flag_fields
from dylora_moe.training.cli import config_from_namespace
from dylora_moe.training.config import TrainConfig


@dataclass
class Example:
    learning_rate: float = field(default=0.5, metadata={"help": "step size of 100% sure updates"})
    reference: str = field(default="stdlib", metadata={"help": "centre of the embeddings",
                                                       "flag": "novelty_reference"})
    packing: bool = field(default=False, metadata={"help": "pack rows"})
    freeze_experts: bool = field(default=True, metadata={"help": "train every expert", "flag": "train_all"})
    mixing: str = field(default="concat", metadata={"help": "how", "choices": ("concat", "interleave")})
    resume: str | None = field(default=None, metadata={"help": "from where", "const": "latest"})
    limit: int | None = None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_flags(parser, Example)
    return parser


def _parse(*argv: str) -> Example:
    return config_from_args(Example, _parser().parse_args(list(argv)))


def test_help_shows_each_fields_help_and_default_once():
    text = " ".join(_parser().format_help().split())
    assert "--learning_rate LEARNING_RATE, --learning-rate LEARNING_RATE step size of 100% sure updates " \
           "(default: 0.5)" in text
    assert text.count("(default: 0.5)") == 1
    assert "--novelty_reference NOVELTY_REFERENCE, --novelty-reference NOVELTY_REFERENCE centre of the " \
           "embeddings (default: stdlib)" in text
    assert "--limit LIMIT (default: None)" in text


def test_defaults_types_and_dash_aliases():
    assert _parse() == Example()
    assert _parse("--learning-rate", "0.25", "--limit", "3") == Example(learning_rate=0.25, limit=3)
    with pytest.raises(SystemExit):
        _parse("--limit", "many")


def test_renamed_flag_maps_to_its_field():
    assert _parse("--novelty_reference", "none").reference == "none"
    assert _parse("--novelty-reference", "none").reference == "none"
    with pytest.raises(SystemExit):
        _parse("--reference", "none")


def test_bool_flags_flip_their_default():
    assert (_parse().packing, _parse("--packing").packing) == (False, True)
    assert (_parse().freeze_experts, _parse("--train_all").freeze_experts) == (True, False)
    with pytest.raises(SystemExit):
        _parse("--packing", "yes")  # a switch takes no value


def test_choices_and_optional_value():
    assert _parse("--mixing", "interleave").mixing == "interleave"
    with pytest.raises(SystemExit):
        _parse("--mixing", "zip")
    assert (_parse().resume, _parse("--resume").resume, _parse("--resume", "auto").resume) == (None, "latest", "auto")


@pytest.mark.parametrize("cls", [TrainConfig, DataConfig, ContinualConfig])
def test_every_flag_of_the_real_configs_has_help(cls):
    skip = ("seed",) if cls is DataConfig else ()
    assert [f.name for f in flag_fields(cls, skip) if not f.metadata.get("help")] == []


def test_train_command_defaults_equal_the_configs():
    args = build_parser().parse_args(["train"])
    assert config_from_namespace(args) == TrainConfig()
    assert config_from_args(ContinualConfig, args) == ContinualConfig()


def test_train_command_sets_nested_data_and_its_seed():
    cfg = config_from_namespace(build_parser().parse_args(
        ["train", "--seed", "7", "--max-seq-length", "64", "--mixing", "interleave", "--auto_resume"]))
    assert (cfg.seed, cfg.data.seed, cfg.data.max_seq_length, cfg.data.mixing) == (7, 7, 64, "interleave")
    assert cfg.resume_from_checkpoint == "auto"


def test_train_help_shows_every_flag_with_its_help_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    packed = "".join(text.split())  # argparse wraps at spaces and after hyphens
    for cls, skip in ((TrainConfig, ()), (DataConfig, ("seed",)), (ContinualConfig, ())):
        for f in flag_fields(cls, skip):
            assert f"--{f.metadata.get('flag', f.name)}" in text, f.name
            assert "".join(f.metadata["help"].split()) in packed, f.name
    assert packed.count("(default:tiny)") == 1
    assert not [line for line in text.split("--") if line.count("(default") > 1]  # a help that says it: once
    assert "--train_all_experts, --train-all-experts do not freeze earlier experts while a skill is learned " \
           "(default: False)" in text


def _option_classes():
    from dylora_moe.cloud import cli as submit_cli
    from dylora_moe.eval.options import EvalOptions, GenerateOptions

    return {("eval", "--model", "m"): [EvalOptions], ("generate", "--model", "m"): [GenerateOptions],
            ("submit", "vertex"): [submit_cli.WhereFlags, submit_cli.HardwareFlags, submit_cli.SchedulingFlags,
                                   submit_cli.TrainingFlags, submit_cli.RunFlags]}


@pytest.mark.parametrize("argv", list(_option_classes()), ids=lambda argv: argv[0])
def test_eval_generate_and_submit_flags_come_from_their_dataclasses(argv, monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    args = build_parser().parse_args(list(argv))
    for cls in _option_classes()[argv]:
        assert [f.name for f in flag_fields(cls) if not f.metadata.get("help")] == []
        expected = cls(model="m") if "model" in {f.name for f in flag_fields(cls)} else cls()
        assert config_from_args(cls, args) == expected

"""`--config FILE|DIR|URI` for every command: a YAML or JSON mapping of option names to values.

The file's values become the chosen command's parser defaults, so a flag given on the command line wins. Keys are
the flag names without dashes (`max_steps`, `staging-bucket` or `staging_bucket`) or the field names a saved
`run_config.json` holds (`freeze_experts`); the keys of a `data:` or `continual:` mapping count as top-level keys
(a top-level key wins over the same key in a section). A directory or store URI stands for its run's
`run_config.json`: an output or checkpoint directory's own, else that of the checkpoint `fetch_checkpoint` resolves
(an output dir's newest, a store's version: gs://, s3://, wandb://, a local store), so a run can be re-run as it was.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Callable

from dylora_moe.errors import UserError

SECTIONS = ("data", "continual")  # nested mappings of a saved run_config.json (TrainConfig.data, continual options)
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
_SKIP = object()  # a switch set to false by its other name (`train_all_experts: false`): nothing to set


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE|DIR|URI", default=None, help=(
        "YAML or JSON file of option names to values (flags given here win), or a run_config.json, output dir, "
        "checkpoint dir or store URI to re-run that run's options"))


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str], log: Callable[[str], object]) -> None:
    """When `argv` has `--config`, make its values the defaults of the subcommand `argv` chooses."""
    source = config_argument(argv)
    if source is None:
        return
    leaf = leaf_parser(parser, argv)
    if not any("--config" in a.option_strings for a in leaf._actions):
        return  # a command without --config, which argparse then reports
    set_config_defaults(leaf, read_config(source, log), source, argv)


def config_argument(argv: list[str]) -> str | None:
    """The value of `--config` in `argv`, before any `--` (what follows belongs to another command)."""
    for i, token in enumerate(argv):
        if token == "--":
            return None
        if token.startswith("--config="):
            return token.split("=", 1)[1]
        if token == "--config":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UserError("--config needs a value: a YAML or JSON file, a run's output or checkpoint "
                                "directory, or a store URI")
            return argv[i + 1]
    return None


def leaf_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that `argv`'s command words (`train`, `submit vertex`) select."""
    for token in argv:
        if token == "--":
            break
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if token in choices:
            parser = choices[token]
    return parser


def read_config(source: str, log: Callable[[str], object] = print) -> dict:
    """The flat mapping of option names to values that `source` (a file, a run's directory, a URI) holds."""
    path = Path(source).expanduser()
    if path.is_file():
        return flatten(parse_config_text(path), source)
    if path.is_dir() and (path / _run_config_name()).is_file():
        return flatten(parse_config_text(path / _run_config_name()), source)
    if path.suffix.lower() in CONFIG_SUFFIXES and "://" not in source:
        raise UserError(f"--config {source}: no such file; expected a YAML or JSON config file (see examples/)")
    from dylora_moe.checkpoint.resolve import fetch_checkpoint

    directory = fetch_checkpoint(source, log=log)
    saved = directory / _run_config_name()
    if not saved.is_file():
        raise UserError(f"--config {source}: the checkpoint {directory} has no {_run_config_name()}; expected a "
                        "checkpoint written by `dylora-moe train`, or pass a config file")
    return flatten(parse_config_text(saved), source)


def _run_config_name() -> str:
    from dylora_moe.checkpoint.manifest import RUN_CONFIG_NAME

    return RUN_CONFIG_NAME


def parse_config_text(path: Path) -> dict:
    """A config file's mapping: JSON for `.json`, else YAML (which reads JSON too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path}: cannot read it ({exc}); expected a readable YAML or JSON file") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"--config {path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"--config {path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values, got a "
                        f"{type(data).__name__}")
    return data


def flatten(data: dict, source: str) -> dict:
    """Top-level keys, then the keys of the `data:`/`continual:` sections that the top level does not set."""
    flat = {str(k): v for k, v in data.items() if not (k in SECTIONS and isinstance(v, dict))}
    for section in SECTIONS:
        if isinstance(data.get(section), dict):
            for key, value in data[section].items():
                flat.setdefault(str(key), value)
    return flat


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every key a config may use for `parser` -> its action: flag names (dashes as underscores) and dests."""
    names: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in ("help", "config", argparse.SUPPRESS) or isinstance(action, argparse._SubParsersAction):
            continue
        for option in action.option_strings:
            names.setdefault(option.lstrip("-").replace("-", "_"), action)
        names.setdefault(action.dest, action)
    return names


def set_config_defaults(parser: argparse.ArgumentParser, values: dict, source: str, argv: list[str]) -> None:
    """Check every key and value of a config against `parser`'s options, then make them its defaults."""
    actions = option_actions(parser)
    defaults: dict = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in actions:
            raise UserError(_unknown_key(key, actions, source, parser.prog))
        converted = convert_value(name, value, actions[name], source)
        if converted is not _SKIP:
            defaults[actions[name].dest] = converted
    _drop_exclusive(parser, defaults, source, argv)
    for action in parser._actions:
        if action.required and action.dest in defaults:
            action.required = False  # the file gives it
    parser.set_defaults(**defaults)


def _unknown_key(key: str, actions: dict, source: str, prog: str) -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), sorted(actions), n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else "no option has a similar name"
    return f"--config {source}: unknown key {key!r}; {hint} (`{prog} --help` lists the options)"


def convert_value(name: str, value, action: argparse.Action, source: str):
    """`value` as the option's type (one line naming key, value and expected type when it is not)."""
    def wrong(expected: str) -> UserError:
        return UserError(f"--config {source}: {name}: {value!r} is not {expected}; fix its value in the file")

    if isinstance(action, _SWITCHES):
        nullable = action.default is None
        if name == action.dest:  # the field itself, as run_config.json saves it
            if isinstance(value, bool) or (value is None and nullable):
                return value
            raise wrong("true or false" + (" or null" if nullable else ""))
        if not isinstance(value, bool):
            raise wrong("true or false")
        return action.const if value else _SKIP
    if action.nargs == "*" and isinstance(value, dict):
        return flags_from_mapping(value)
    if isinstance(action, argparse._AppendAction) or action.nargs == "*":
        return _string_list(value, wrong)
    if value is None:
        if (action.default is None and not action.required) or action.const is not None:
            return None
        raise wrong(_type_name(action))
    converted = _scalar(value, action.type, wrong)
    if action.choices is not None and converted not in action.choices:
        raise wrong(f"one of {', '.join(map(str, action.choices))}")
    return converted


def _type_name(action: argparse.Action) -> str:
    return {int: "an integer", float: "a number"}.get(action.type, "a string")


def _scalar(value, kind, wrong):
    """int, float or str (a list of strings joins with commas: `datasets: [stdlib, mbpp]`). A number written as
    text is read as the command line would read it (YAML takes `1e-3`, without a dot, for a string)."""
    if isinstance(value, bool):
        raise wrong({int: "an integer", float: "a number"}.get(kind, "a string"))
    if kind in (int, float):
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        elif isinstance(value, int) or (kind is float and isinstance(value, float)):
            return kind(value)
        raise wrong("an integer" if kind is int else "a number")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, (str, int, float)):
        return str(value)
    raise wrong("a string")


def flags_from_mapping(values: dict) -> list[str]:
    """Another command's arguments given as a mapping (`training_args: {max_steps: 10, bf16: true}`): `--key
    value`, `--key` for true, nothing for false or null, lists joined with commas."""
    argv: list[str] = []
    for key, value in values.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not False and value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            argv += [f"--{key}", text]
    return argv


def _string_list(value, wrong) -> list[str]:
    """A repeatable option's values: a list of strings, or a mapping (`env: {NAME: value}` -> NAME=value)."""
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise wrong("a list of strings")


def _drop_exclusive(parser: argparse.ArgumentParser, defaults: dict, source: str, argv: list[str]) -> None:
    """Options that exclude each other: two in the file are refused; one on the command line replaces the file's."""
    for group in parser._mutually_exclusive_groups:
        members = group._group_actions
        in_file = [a.dest for a in members if a.dest in defaults]
        if len(in_file) > 1:
            raise UserError(f"--config {source}: {' and '.join(in_file)} exclude each other; keep one")
        given = {token.split("=", 1)[0] for token in argv[:argv.index("--") if "--" in argv else len(argv)]}
        if any(option in given for a in members for option in a.option_strings):
            for action in members:
                defaults.pop(action.dest, None)

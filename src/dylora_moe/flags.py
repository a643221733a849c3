"""Command-line flags generated from a config dataclass, so the library API and the CLI cannot drift apart.

Each field becomes `--field` (and `--field-with-dashes`); its help, choices and a different flag name come
from `field(metadata={...})`, as `TrainingArguments` does it. Metadata keys:
    help     what the option does (the default is appended to it)
    flag     the name users type when it differs from the field's (`dest` stays the field's name)
    choices  the values argparse accepts
    const    the flag may be given without a value, meaning `const`
    metavar  the placeholder `--help` shows for the value (default: the flag's name in capitals)
    required the flag must be given (on the command line or in a --config file)
    exclusive  fields naming the same group may not be given together (argparse's mutually exclusive group)
A bool field is a switch that flips its default: `--bf16` sets False -> True; a True default gets a flag that
sets it False (name it with `flag`, e.g. `--train_all_experts` for `freeze_experts`). A `bool | None` field
(None: decided at run time) gets `--field` for True and `--no_field` for False. A `list[str] | None` field is a
repeatable flag (`--label A=1 --label B=2`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

_TYPES = (int, float, str)


def _value_type(hint) -> type:
    """int/float/str of a field's hint, `X | None` included."""
    if hint in _TYPES:
        return hint
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(inner) == 1 and inner[0] in _TYPES:
        return inner[0]
    raise TypeError(f"no command-line type for a field of type {hint!r}")


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", f.name)


def flag_fields(cls, skip: typing.Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of `cls` that have a flag: not in `skip`, not nested configs."""
    hints = typing.get_type_hints(cls)
    return [f for f in dataclasses.fields(cls)
            if f.name not in skip and not dataclasses.is_dataclass(hints[f.name])]


def _target(parser, f: dataclasses.Field, groups: dict):
    """`parser`, or the mutually exclusive group the field's `exclusive` metadata names (made once)."""
    name = f.metadata.get("exclusive")
    if name is None:
        return parser
    if name not in groups:
        groups[name] = parser.add_mutually_exclusive_group()
    return groups[name]


def add_dataclass_flags(parser, cls, skip: typing.Iterable[str] = ()) -> None:
    """One flag per field of `cls` (but `skip`) on `parser` (a parser or an argument group)."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    groups: dict = {}
    for f in flag_fields(cls, skip):
        target = _target(parser, f, groups)
        name = flag_name(f)
        names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "").replace("%", "%%")
        shown = "" if "(default" in help_text else " (default: %(default)s)"  # the help may say it in its words
        options: dict = {"dest": f.name, "default": default, "help": f"{help_text}{shown}".lstrip()}
        if hints[f.name] == bool | None:  # undecided unless given: one flag for each answer
            target.add_argument(*names, dest=f.name, action="store_const", const=True, default=default,
                                help=f"{help_text} (default: %(default)s, i.e. unset)".lstrip())
            target.add_argument(f"--no_{name}", f"--no-{name.replace('_', '-')}", dest=f.name,
                                action="store_const", const=False, default=argparse.SUPPRESS,
                                help=f"the opposite of --{name}")
            continue
        if hints[f.name] is bool and default:  # the flag turns it off; unset, the field keeps its default
            options.update(action="store_false", default=argparse.SUPPRESS,
                           help=f"{help_text} (default: False)".lstrip())
        elif hints[f.name] is bool:
            options["action"] = "store_true"
        elif hints[f.name] == list[str] | None:
            options.update(action="append", type=str, metavar=f.metadata.get("metavar", name.upper()))
        else:
            options["type"] = _value_type(hints[f.name])
            if "choices" in f.metadata:
                options["choices"] = f.metadata["choices"]
            else:
                options["metavar"] = f.metadata.get("metavar", name.upper())
            if "const" in f.metadata:
                options.update(nargs="?", const=f.metadata["const"])
        if f.metadata.get("required"):
            options.update(required=True, help=help_text)
        target.add_argument(*names, **options)


def config_from_args(cls, args: argparse.Namespace, skip: typing.Iterable[str] = (), **values):
    """`cls` from parsed flags: a field whose flag was not defined keeps its default; `values` set the rest
    (e.g. nested configs)."""
    for f in flag_fields(cls, skip):
        if f.name not in values and hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values)

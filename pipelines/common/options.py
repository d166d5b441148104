"""Options dataclasses: each option declared once, with its default, help text, flag and search space.

    @dataclass
    class LgbmOptions:
        learning_rate: float = option(0.02, "shrinkage per round", flag="--lgbm-learning-rate",
                                      space=("float", 0.005, 0.1, "log"))

``add_options`` turns such a class into an argparse group (the data stage's sample options, a competition's
own options); ``pipelines.common.models.add_model_arguments`` does it for a model registry. Arguments are
left unset (None) by argparse, so a caller can tell what the command line gave (``given_options``) from
what the defaults say.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

MISSING = dataclasses.MISSING


def option(default: Any, help: str, *, flag: str | None = None, choices: Sequence | None = None,
           space: tuple | None = None, negate: str | None = None, metavar: str | None = None,
           cli: bool = True, nargs: str | None = None):
    """A field of an options dataclass: its default, help text, command-line flag (default ``--<name>``),
    choices, and search space for tuning (``("float", low, high[, "log"])``, ``("int", low, high)``,
    ``("categorical", [values])``). A bool option is a switch: ``flag`` turns it on (default off) and
    ``negate`` names the flag that turns it off (for options on by default). ``cli=False``: set by profiles
    or code only."""
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
            "space": space, "negate": negate, "metavar": metavar, "cli": cli, "nargs": nargs}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionInfo:
    name: str          # the dataclass field
    flag: str          # --the-flag
    dest: str          # argparse dest
    default: Any
    type: Any
    help: str
    choices: tuple | None
    space: tuple | None
    negate: str | None
    metavar: str | None
    nargs: str | None


def option_infos(options_cls: type) -> list[OptionInfo]:
    """The command-line options of an options dataclass, in field order."""
    import typing

    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        meta = f.metadata
        if not meta or not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                               else None)
        out.append(OptionInfo(name=f.name, flag=flag, dest=flag.lstrip("-").replace("-", "_"), default=default,
                              type=_scalar_type(hints.get(f.name)), help=meta.get("help", ""),
                              choices=meta.get("choices"), space=meta.get("space"), negate=meta.get("negate"),
                              metavar=meta.get("metavar"), nargs=meta.get("nargs")))
    return out


def _scalar_type(hint) -> Any:
    """int / float / str / bool of a field's type hint (``float | None`` -> float)."""
    import types
    import typing

    if hint is None:
        return str
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0] if args else str
    if typing.get_origin(hint) in (list, tuple):
        inner = typing.get_args(hint)
        return inner[0] if inner else str
    return hint if hint in (int, float, str, bool) else str




def add_options(parser, options_cls: type, title: str | None = None, declared: dict | None = None,
                default_text=None) -> None:
    """An argparse group (or ``parser`` itself when ``title`` is None) with every option of ``options_cls``.
    ``declared`` (flag -> OptionInfo) skips options already added alike and refuses conflicting ones;
    ``default_text(info)`` words the default in the help (default: "(default X)")."""
    group = parser.add_argument_group(title) if title else parser
    declared = {} if declared is None else declared
    for info in option_infos(options_cls):
        if info.flag in declared:
            other = declared[info.flag]
            if (other.type, other.default, other.dest) != (info.type, info.default, info.dest):
                raise ValueError(f"option {info.flag} is declared twice with different types or defaults "
                                 f"({other.type.__name__} {other.default!r} and {info.type.__name__} "
                                 f"{info.default!r}): give one of them another flag")
            continue
        declared[info.flag] = info
        shown = default_text(info) if default_text else (
            f" (default {info.default})" if info.type is not bool and info.default not in (None, "") else "")
        help_text = (info.help + shown).replace("%", "%%")
        if info.type is bool:
            group.add_argument(info.flag, dest=info.dest, action="store_const", const=True, default=None,
                               help=help_text)
            if info.negate:
                group.add_argument(info.negate, dest=info.dest, action="store_const", const=False, default=None,
                                   help=f"turn {info.flag} off")
        else:
            group.add_argument(info.flag, dest=info.dest, type=info.type, default=None, choices=info.choices,
                               metavar=info.metavar, nargs=info.nargs, help=help_text)


def given_options(args: argparse.Namespace, options_cls: type) -> dict:
    """{field: value} of the options the command line set (None: not given)."""
    out = {}
    for info in option_infos(options_cls):
        value = getattr(args, info.dest, None)
        if value is not None:
            out[info.name] = value
    return out


def search_space(options_cls: type) -> dict[str, tuple]:
    """{field: space} of the fields that declare one (for the tuning stage)."""
    return {f.name: f.metadata["space"] for f in dataclasses.fields(options_cls)
            if f.metadata and f.metadata.get("space")}

"""CLI options read from the config dataclasses: an option's default and help are the field's
(`routelens.config.setting`), so they are written once, in the library.

    min_count: int = config_option(AnalyzeConfig, "min_count", "--min-count")
    ...
    config = cli_config(AnalyzeConfig, min_count=min_count, ...)

A field holding a tuple is a repeatable option whose CLI default is None, meaning "the config's
default" (`cli_config` leaves it out); its help says what that default is.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, TypeVar

import typer

from routelens.config import HELP, SHOWN_DEFAULT, build_config

C = TypeVar("C")


def config_field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")  # a programming error, not a user's


def field_default(cls: type, name: str) -> Any:
    """The field's default; dataclasses.MISSING for a required field."""
    f = config_field(cls, name)
    if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _shown(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def config_option(cls: type, name: str, *flags: str, **option: Any) -> Any:
    """A typer Option (`param: T = config_option(...)`) with the field's default and help.

    A tuple default becomes None on the command line (repeatable option: "the config's default")
    and is spelled out in the help; `shown_default` metadata words a default that is not a value.
    Extra keyword arguments go to typer.Option (e.g. `show_default=False`).
    """
    f = config_field(cls, name)
    help_text = f.metadata.get(HELP)
    if help_text is None:
        raise KeyError(f"{cls.__name__}.{name} has no help text; declare it with routelens.config.setting")
    default = field_default(cls, name)
    default = ... if default is dataclasses.MISSING else default  # typer's spelling of "required"
    shown = f.metadata.get(SHOWN_DEFAULT)
    if isinstance(default, tuple):
        shown = shown or " ".join(_shown(v) for v in default)
        default = None
    if shown is not None:  # in typer's own words, bracket escaped for rich markup
        help_text = f"{help_text} \\[default: {shown}]"
        option.setdefault("show_default", False)
    return typer.Option(default, *flags, help=help_text, **option)


def cli_config(cls: type[C], **values: Any) -> C:
    """Build `cls` by keyword from parsed options: a None that stands for a non-None default is
    left out (so the config's own default applies), lists become tuples."""
    kept = {}
    for name, value in values.items():
        if value is None and field_default(cls, name) is not None:
            continue
        kept[name] = tuple(value) if isinstance(value, list) else value
    return build_config(cls, None, kept)

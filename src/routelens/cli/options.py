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


def field_help(cls: type, name: str) -> str:
    """The field's help text, with its default spelled out where --help could not show it (a
    tuple, or a `shown_default` such as "1..E")."""
    f = config_field(cls, name)
    help_text = f.metadata.get(HELP)
    if help_text is None:
        raise KeyError(f"{cls.__name__}.{name} has no help text; declare it with routelens.config.setting")
    default = field_default(cls, name)
    shown = f.metadata.get(SHOWN_DEFAULT)
    if shown is None and isinstance(default, tuple):
        shown = " ".join(_shown(v) for v in default)
    return help_text if shown is None else f"{help_text} \\[default: {shown}]"  # typer's words, escaped for rich


def config_option(cls: type, name: str, *flags: str, **option: Any) -> Any:
    """A typer Option (`param: T = config_option(...)`) with the field's default and help.

    A tuple default becomes None on the command line (repeatable option: "the config's default"),
    spelled out in the help as is a `shown_default` (a default that is not a value, e.g. "1..E").
    Extra keyword arguments go to typer.Option.
    """
    f = config_field(cls, name)
    default = field_default(cls, name)
    default = ... if default is dataclasses.MISSING else default  # typer's spelling of "required"
    if isinstance(default, tuple):
        default = None
    if default is None or SHOWN_DEFAULT in f.metadata:  # the help says it, or there is none to show
        option.setdefault("show_default", False)
    return typer.Option(default, *flags, help=field_help(cls, name), **option)


def cli_config(cls: type[C], **values: Any) -> C:
    """Build `cls` by keyword from parsed options: None from a repeatable option (a tuple field)
    is left out, so the config's own default applies; lists become tuples. Any other None is
    passed on as a value (scalar options default to the field's own default, never to None
    unless the field's is)."""
    kept = {}
    for name, value in values.items():
        if value is None and isinstance(field_default(cls, name), tuple):
            continue
        kept[name] = tuple(value) if isinstance(value, list) else value
    return build_config(cls, None, kept)

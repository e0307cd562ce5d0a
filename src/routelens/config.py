"""Config dataclasses: each setting's default and help text are written once, on its field, and
every entry point builds its config the same way, from `(config=None, **overrides)`.

    @dataclass
    class AnalyzeConfig:
        min_count: int = setting(10, "Occurrences a token id needs to count in vocabulary specialization.")

    def analyze(trace, config: AnalyzeConfig | None = None, **overrides) -> dict:
        config = build_config(AnalyzeConfig, config, overrides)

The command line reads the same field for its option's default and help
(`routelens.cli.options.config_option`), so the library, the CLI and `--help` cannot disagree.
Configs are built by keyword only: reordering fields never shifts a value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from routelens.errors import RoutelensError

C = TypeVar("C")
E = TypeVar("E")
HELP = "help"  # field metadata key of the help text
SHOWN_DEFAULT = "shown_default"  # metadata key: how --help words a default that is not a value (e.g. "1..E")


def setting(default: Any, help: str, *, shown_default: str | None = None) -> Any:
    """A dataclass field with its default and its one help text (used by --help too)."""
    metadata = {HELP: help} | ({SHOWN_DEFAULT: shown_default} if shown_default is not None else {})
    return dataclasses.field(default=default, metadata=metadata)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_names(names, valid: list[str], what: str) -> None:
    """Refuse a keyword that no config field has, naming it and the valid ones."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise RoutelensError(f"unknown option {unknown[0]!r} for {what}; valid options are {', '.join(valid)}.")


def build_config(cls: type[C], config: C | None, overrides: Mapping[str, Any]) -> C:
    """`config` (or the defaults) with `overrides` applied, validated by the class's __post_init__."""
    check_names(overrides, field_names(cls), cls.__name__)
    if config is not None and not isinstance(config, cls):
        raise RoutelensError(
            f"config must be of type {cls.__name__}, not {type(config).__name__}; build one with {cls.__name__}(...)."
        )
    if config is None:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in overrides and _required(f)]
        if missing:
            raise RoutelensError(f"{cls.__name__} needs {', '.join(missing)}; pass {missing[0]}=... .")
        return cls(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config


def split_overrides(overrides: Mapping[str, Any], *classes: type, what: str) -> list[dict]:
    """Route each keyword to every config class that has the field (a shared `seed` goes to all)."""
    valid = [name for cls in classes for name in field_names(cls)]
    check_names(overrides, list(dict.fromkeys(valid)), what)
    return [{k: v for k, v in overrides.items() if k in field_names(cls)} for cls in classes]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def choice(cls: type[E], value: Any, what: str) -> E:
    """`value` as a member of the StrEnum `cls`, or a user error naming it and the choices."""
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise RoutelensError(f"{what} {value!r} is unknown; use one of {choices}.") from None

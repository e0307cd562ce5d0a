"""Every help page of the `routelens` command shows flags as flags: no `<bool>` after `--pos` or
`--help`, while options that take a value keep their type (`--min-count <int>`)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from routelens.cli.main import app


def command_paths(command=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The argv prefix of every command and group, the root included."""
    command = command or typer.main.get_command(app)
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*prefix, name))
    return paths


def help_page(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_reached():
    names = {" ".join(p) for p in command_paths()}
    assert {"", "analyze", "simulate", "simulate cache", "corpus builtin", "info", "inspect"} <= names


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "routelens")
def test_no_flag_is_shown_as_taking_a_value(path):
    text = help_page(path)
    assert "--help" in text
    assert "<bool>" not in text, text


def test_options_with_a_value_keep_their_type():
    text = help_page(("analyze",))
    pos = next(line for line in text.splitlines() if "--pos " in line)
    count = next(line for line in text.splitlines() if "--min-count" in line)
    assert "<int>" in count and "<" not in pos.split("Also run")[0]

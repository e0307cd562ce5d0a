"""What every command shares: the consoles, the one-line user-error convention and help pages that
show flags as flags (progress bars live in the library, `routelens.progress`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from routelens.errors import RoutelensError
from routelens.progress import console as err_console

console = Console()

STDOUT = "-"  # `--json -`: the JSON goes to stdout instead of a file


def to_stdout(path: str | Path | None) -> bool:
    return path is not None and str(path) == STDOUT


class BareJsonCommand(TyperCommand):
    """A command whose `--json` may still be given bare, as `info` and `inspect` took it before
    `--json FILE` (a bare `--json` means `--json -`: stdout). typer's options cannot take an
    optional value, so a bare `--json` (last, or followed by another option) gets its `-` here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        i = 0
        while i < len(args) and args[i] != "--":
            following = args[i + 1] if i + 1 < len(args) else None
            if args[i] == "--json" and (following is None or (following.startswith("-") and following != STDOUT)):
                args.insert(i + 1, STDOUT)
            i += 1
        return super().parse_args(ctx, args)


def print_json(payload: Any, **fmt: Any) -> None:
    """The JSON alone on stdout (no markup, no wrapping), formatted as the command's file would be."""
    from routelens.atomic import json_text

    sys.stdout.write(json_text(payload, **fmt) + "\n")
    sys.stdout.flush()


def emit_result(result: dict, json_path: str | Path | None, show: Callable[[dict], None]) -> None:
    """What a command with `--json FILE` does with its result: `-` prints the JSON alone on stdout;
    otherwise `show` prints the tables and the JSON file is written (atomically) when asked for."""
    if to_stdout(json_path):
        print_json(result, indent=1)
        return
    show(result)
    if json_path is not None:
        from routelens.analysis import write_json

        write_json(result, json_path)
        console.print(f"[green]wrote[/] {json_path}")


def _show_flags_as_flags() -> None:
    """typer's rich help panel (0.29) asks every option for a type label, flags included, so
    `--pos` and `--help` read `<bool>` as if they took a value; its plain formatter already leaves
    flags out. Give flags no label, for every command at once (tests/cli/test_help.py)."""
    if getattr(TyperOption.display_type_rich, "_routelens_flags", False):
        return
    typed = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else typed(self, ctx)

    display_type_rich._routelens_flags = True
    TyperOption.display_type_rich = display_type_rich


_show_flags_as_flags()


OUTPUT_FLAGS = ("--out", "-o", "--json", "--figures")  # options naming a file or folder a command writes


def check_output_location(flag: str, path: str | Path) -> None:
    """Refuse an output that can never be written (under a file, in a read-only folder) before the
    command computes for minutes (`routelens.atomic.check_location`)."""
    from routelens.atomic import check_location

    check_location(path, f"{flag} {path}")


def _checking_outputs(command) -> None:
    """Wrap `command`'s callback so that its single-valued output options are checked first."""
    flags = {
        p.name: next(o for o in p.opts if o in OUTPUT_FLAGS)
        for p in command.params
        if isinstance(p, TyperOption) and not p.multiple and any(o in OUTPUT_FLAGS for o in p.opts)
    }
    callback = command.callback
    if not flags or callback is None or getattr(callback, "_outputs_checked", False):
        return

    def checked(*args, **kwargs):
        for name, flag in flags.items():
            value = kwargs.get(name)
            if isinstance(value, (str, Path)) and str(value) != STDOUT:
                check_output_location(flag, value)
        return callback(*args, **kwargs)

    checked._outputs_checked = True
    command.callback = checked


class UserErrorGroup(TyperGroup):
    """Turns a RoutelensError raised by any command into one red line on stderr and exit code 2, and
    refuses an output location that cannot be written before the command starts."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, TyperGroup):
            _checking_outputs(command)
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RoutelensError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None  # typer >= 0.24 vendors click: only its own Exit sets the code


def new_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=UserErrorGroup,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )


def import_notes(report: dict) -> list[str]:
    """The lines an import (and `routelens info`) prints about what it left out or found."""
    out = []
    if report.get("aborted"):
        out.append(f"left out {report['aborted']:,} aborted requests (routed_experts null)")
    if report.get("left_out"):
        out.append(f"left out {report['left_out']:,} requests with expert ids outside 0..E+Z-1")
    if report.get("unchained_tokens"):
        out.append(
            f"{report['unchained_tokens']:,} recorder tokens in {report.get('unchained_passes', 0):,} passes could not "
            "be chained to their request: each is a document of its own (docs/engines.md)"
        )
    found = {k: v for k, v in (report.get("anomalies") or {}).items() if v}
    if found:
        out.append("anomalies: " + ", ".join(f"{k} {v:,}" for k, v in found.items()) + " (refused under --strict)")
    return out

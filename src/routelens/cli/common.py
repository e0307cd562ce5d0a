"""What every command shares: the consoles and the one-line user-error convention (progress bars
live in the library, `routelens.progress`)."""

from __future__ import annotations

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from routelens.errors import RoutelensError
from routelens.progress import console as err_console

console = Console()


class UserErrorGroup(TyperGroup):
    """Turns a RoutelensError raised by any command into one red line on stderr and exit code 2."""

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


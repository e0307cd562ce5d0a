"""Progress bars and status lines for long work, owned by the library.

Library functions that take minutes (trace, train, analyze, simulate, report) show a rich bar on
stderr; each takes `progress: bool`, and `disable_progress_bars()` silences every bar at once, the
way huggingface_hub keeps its tqdm switch beside its own code rather than in a front end. The CLI
only turns bars on or off (`--quiet`); nothing here imports the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Bars and status lines go to stderr, so that stdout stays clean for `--json -`.
console = Console(stderr=True)

_enabled = True


def disable_progress_bars() -> None:
    """Silence every progress bar and status line of the library (tests, batch jobs)."""
    global _enabled
    _enabled = False


def enable_progress_bars() -> None:
    global _enabled
    _enabled = True


def are_progress_bars_enabled() -> bool:
    return _enabled


def progress_bar(disable: bool = False, *, transient: bool = False) -> Progress:
    """A rich progress bar with counts, rates and time left; `disable` silences this one bar."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not _enabled,
        transient=transient,
    )


def status(message: str, *, show: bool = True) -> None:
    """One status line on stderr (rich markup allowed), unless bars are off."""
    if show and _enabled:
        console.print(message, highlight=False)


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """Without transformers' own loading and shard-writing bars for the length of a `with`: they
    would interleave with ours and with one-line errors, and a quiet run must stay quiet."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()

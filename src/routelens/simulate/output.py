"""Where a simulator's result goes on disk: one JSON file (`json_path`), checked before the
simulation runs, so that a missing folder is refused in a second rather than after minutes of
replay, and written atomically once the result is whole (`routelens.atomic.write_json`)."""

from __future__ import annotations

import os

from routelens.atomic import check_json_target, write_json

# The formatting every version of `routelens simulate --json` wrote; NaN is kept (a metric over no
# full batch), as Python reads it back.
FORMAT = {"indent": 2, "allow_nan": True}


def check_output(json_path: str | os.PathLike | None) -> None:
    """Refuse, before any work, a `json_path` that is a folder or lies in a folder that does not exist."""
    if json_path is not None:
        check_json_target(json_path, what="--json", folder_must_exist=True)


def write_output(result: dict, json_path: str | os.PathLike | None) -> dict:
    """Write `result` to `json_path` when one is given; return `result`."""
    if json_path is not None:
        write_json(json_path, result, newline=True, what="--json", folder_must_exist=True, **FORMAT)
    return result

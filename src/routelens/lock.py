"""An exclusive lock on an output path for the length of a run.

Two runs writing one trace directory (or one report, one training folder) would interleave their
shards or replace each other's files while both report success. Every command that writes a
directory or a named output takes `output_lock(path)` first; a second run gets one line naming the
holder's PID and exits with code 2.

The lock is a `flock` on a small sidecar file beside the output (`.NAME.routelens-lock`), not inside
it, so that `--overwrite`, which replaces the output folder, cannot delete the lock of the run that
holds it. The kernel releases a `flock` when its process dies, however it dies, so the lock of a
killed run is stale the moment it dies and the next run takes it over; the PID written into the file
is only there to name the holder in the message.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from routelens.errors import RoutelensError


class OutputLockedError(RoutelensError):
    """Another live run holds the lock on this output."""


def lock_path(output: str | os.PathLike) -> Path:
    """The sidecar lock file of `output` (a file or a directory)."""
    output = Path(os.path.abspath(output))
    return output.parent / f".{output.name}.routelens-lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {text}" if text.isdigit() else "another process"


@contextmanager
def output_lock(output: str | os.PathLike, *, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on `output` for the body of the `with`; refuse in one line when a
    live process holds it."""
    path = lock_path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RoutelensError(
            f"cannot create {path.parent} for the output {output}: {exc.strerror}; choose a writable location."
        ) from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RoutelensError(
                f"cannot lock the output {output} ({path}: {exc.strerror}); choose a writable location."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise OutputLockedError(
                    f"{output} is in use by {_holder(path)} (another routelens {what}); wait for it to finish "
                    f"or write to another location."
                ) from None
            raise
        # The holder before us may have unlinked the file between our open and our lock: then we
        # hold a lock on a name nobody else can see, and must try again on the current file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        # Unlink while still holding the lock, then release: a waiter that opened the old file
        # sees the inode change above and retries on a fresh one.
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)

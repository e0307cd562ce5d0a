"""Atomic writes: every file and folder routelens produces appears whole or not at all.

A run that dies half-way (Ctrl-C, out of memory, a killed job) must leave the previous output, not
a truncated one that a later command reads as if it were complete. So every writer builds its
output under a temporary name in the target's own folder (a rename is atomic only within one file
system) and renames it over the target once it is whole:

- `write_text`, `write_bytes`, `write_json`: a small file in one call (`write_json` refuses, in
  one line, a folder in the file's place or a file in its folder's: `check_json_target`).
- `atomic_path(target)`: a context manager yielding a temporary path for writers that want a path
  of their own (Parquet shards, `torch.save`, safetensors); renamed over `target` on success,
  removed on failure.
- `atomic_dir(target)`: a whole folder (a report's figures, a model directory), built in a
  temporary sibling and swapped in; the old folder is removed only once the new one is in place.
- `temp_dir(folder, tag)`: a scratch folder removed at the end (the cache simulator's spill).

Two details make the outputs behave like ordinary files:

- Permissions follow the user's umask. `mkstemp`/`mkdtemp` create private 0600/0700 entries (right
  for scratch, wrong for a result another user should read), so a finished output is chmod'ed to
  `0o666 & ~umask` (files) or `0o777 & ~umask` (folders), what `open()`/`mkdir` would have given.
- Temporary names carry `routelens-{pid}-{host}-` (e.g. `.analysis.json.routelens-4242-3fa9c1-x1y2.tmp`).
  A killed process cannot clean up after itself, so every writer first calls `clean_stale` on its
  folder, which removes the temporaries of processes that no longer exist and never those of a
  live one (another run writing beside us). `host` names the machine and PID namespace that wrote
  the name: on a shared file system (NFS, a volume mounted in several containers) a PID only
  means something where it was issued, so temporaries from elsewhere are left to their own host.
  A PID reused by an unrelated process only delays the cleanup; it never removes a live writer's
  files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from routelens.errors import RoutelensError

TAG = "routelens"
# `{lead}routelens[-word]-{pid}-{host}-{random}[.suffix]`: the writer that owns the name. The greedy
# `.*` takes the last such part, so a target that is itself called `routelens-7-...` is not
# mistaken for the temporary of process 7.
_OWNER_RE = re.compile(rf"^.*{TAG}(?:-[a-z]+)?-(\d+)-([0-9a-f]{{6}})-[^/]*$")


def _host_tag() -> str:
    """Six hex digits of the host name and the PID namespace: where this process' PID is valid."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha1(f"{socket.gethostname()}:{namespace}".encode()).hexdigest()[:6]


HOST = _host_tag()
_umask_lock = threading.Lock()


# -- permissions ---------------------------------------------------------------------------------
def current_umask() -> int:
    """The process' umask, read without changing it where the OS allows.

    Linux reports it in /proc/self/status; elsewhere `os.umask` must set it to read it, so it is set
    to the strictest value for that instant (a file another thread creates meanwhile is private,
    never too open) and put back under a lock.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `mkdir` gives a new folder under the current umask."""
    return 0o777 & ~current_umask()


# -- temporary names and their cleanup -------------------------------------------------------------
def temp_prefix(lead: str, *, pid: int | None = None) -> str:
    """A temporary-name prefix that records its writer: `{lead}routelens-{pid}-{host}-` (this
    process unless `pid` is given)."""
    return f"{lead}{TAG}-{os.getpid() if pid is None else pid}-{HOST}-"


def _sibling_lead(target: Path) -> str:
    # Hidden, and named after the target, so that `ls` does not show it and a person sees whose it is.
    return f".{target.name}."


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (one of another user counts as alive)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) is no probe elsewhere (on Windows it signals the process)
    if pid <= 0:
        return True  # not a PID we wrote: never treat it as dead
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # unknown: keep the files
    return True


def owner(name: str) -> tuple[int, str] | None:
    """(PID, host tag) recorded in a routelens temporary name, or None for any other name."""
    m = _OWNER_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def clean_stale(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Remove the routelens temporaries under `folder` (matching the glob `pattern`) whose writer
    process is gone; return what was removed. Live writers' temporaries, those written on another
    host and every name that is not a routelens temporary are left alone."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return removed
    for entry in candidates:
        who = owner(entry.name)
        if who is None or who[1] != HOST or pid_alive(who[0]):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            pass  # another run cleaned it first
        except OSError:
            continue  # not ours to remove (permissions): leave it
        removed.append(entry)
    return removed


def _clean_beside(target: Path) -> None:
    clean_stale(target.parent, f"{glob_escape(_sibling_lead(target))}{TAG}-*")


def glob_escape(text: str) -> str:
    """`text` with glob metacharacters made literal (a file may be called `run[1].json`)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


# -- files ---------------------------------------------------------------------------------------
def make_parent(target: Path) -> None:
    """Create `target`'s folder, refusing in one line when a file stands in its way or the location
    is not writable (checked before any work, not after minutes of it)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), target.parent)
        raise RoutelensError(
            f"cannot write {target}: {blocker} is a file, not a folder; remove it or choose another location."
        ) from None
    except OSError as exc:
        raise RoutelensError(f"cannot write {target} ({exc.strerror}); choose a writable location.") from None


def _check_file_target(target: Path) -> None:
    if target.is_dir():
        raise RoutelensError(f"{target} is a directory; give a file name inside it, such as {target / 'out.json'}.")


@contextmanager
def atomic_path(target: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target` with the
    umask's file mode, on any failure it is removed and `target` keeps its old content.

    The temporary file exists (empty) when the body starts, so that no other writer can take the
    name; writers that open a path for writing (Parquet, `torch.save`, safetensors) overwrite it.
    `suffix` keeps an extension some writers insist on (e.g. ".parquet").
    """
    target = Path(target)
    _check_file_target(target)
    make_parent(target)
    _clean_beside(target)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(_sibling_lead(target)), suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `target` atomically; return the path."""
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(target: str | os.PathLike, text: str, *, encoding: str = "utf-8", newline: str | None = "\n") -> Path:
    """Write `text` to `target` atomically; return the path. Lines end in `\\n` on every OS unless
    `newline` says otherwise (None: the platform's)."""
    target = Path(target)
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)
    return target


def json_text(
    payload: Any, *, indent: int | None = 1, allow_nan: bool = False, newline: bool = False, **dumps: Any
) -> str:
    """`payload` as JSON text. NaN and infinity are refused by default: they are not JSON, and a
    reader in another language would fail on them."""
    text = json.dumps(payload, indent=indent, allow_nan=allow_nan, **dumps)
    return text + "\n" if newline else text


def check_json_target(
    target: str | os.PathLike, *, what: str | None = None, example: str = "out.json", folder_must_exist: bool = False
) -> Path:
    """Refuse in one line a JSON file that cannot be written where asked: a folder stands at
    `target`, a file stands where its folder should be, or the folder is not writable. A missing
    folder is made when the file is written (as every routelens output), unless
    `folder_must_exist` (the simulators' `--json`, whose refusal of a mistyped folder is their
    contract). `what` names the option it came from (`--json`), `example` the file name the fix
    suggests. Cheap, so a command calls it before its long work, and `write_json` again before
    writing."""
    target = Path(target)
    name = f"{what} {target}" if what else str(target)
    if target.is_dir():
        raise RoutelensError(f"{name} is a directory; give a file name such as {target / example}.")
    if folder_must_exist and not target.parent.exists():
        raise RoutelensError(f"{name}: folder {target.parent} does not exist; create it or choose another path.")
    check_location(target, name)
    return target


def check_location(target: str | os.PathLike, name: str) -> None:
    """Refuse in one line an output that can never be written (under a file, in a read-only folder):
    the nearest existing folder above `target` must be a writable folder. `name` leads the message
    (the option and the path, e.g. `--out run/`). Every command checks its outputs so before it
    computes for minutes, and every JSON file is checked so before it is written."""
    above = Path(target).absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise RoutelensError(f"{name}: {above} is a file, not a folder; remove it or choose another location.")
    if not os.access(above, os.W_OK | os.X_OK):
        raise RoutelensError(f"{name}: the folder {above} is not writable; choose a writable location.")


def write_json(
    target: str | os.PathLike,
    payload: Any,
    *,
    indent: int | None = 1,
    allow_nan: bool = False,
    newline: bool = False,
    what: str | None = None,
    example: str = "out.json",
    folder_must_exist: bool = False,
    **dumps: Any,
) -> Path:
    """Write `payload` as JSON to `target` atomically; return the path. Every JSON file routelens
    writes goes through here. The target is checked first (`check_json_target`: `what` and
    `example` word its refusal), and the text is serialised before anything touches the disk, so
    a value that cannot be written leaves no file at all."""
    target = check_json_target(target, what=what, example=example, folder_must_exist=folder_must_exist)
    return write_text(target, json_text(payload, indent=indent, allow_nan=allow_nan, newline=newline, **dumps))


# -- folders -------------------------------------------------------------------------------------
def _make_temp_dir(folder: Path, prefix: str, suffix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder))


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target` (same file system), replacing an older folder only
    once `new` is whole: the old one is renamed aside, the new one renamed in, then the old removed."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise RoutelensError(f"{target} is a file, not a folder; remove it or choose another output folder.")
    os.chmod(new, dir_mode())
    if not target.exists():
        os.replace(new, target)
        return
    old = _make_temp_dir(target.parent, temp_prefix(_sibling_lead(target)), ".old")
    os.replace(target, old)  # POSIX rename may replace an empty folder: the unique name stays ours
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)  # put the old output back rather than leave nothing
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target` (see
    `replace_dir`), on any failure it is removed and `target` is untouched."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise RoutelensError(f"{target} is a file, not a folder; remove it or choose another output folder.")
    make_parent(target)
    _clean_beside(target)
    tmp = _make_temp_dir(target.parent, temp_prefix(_sibling_lead(target)), ".tmp")
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def temp_dir(folder: str | os.PathLike | None = None, tag: str = "tmp", *, hidden: bool = False) -> Iterator[Path]:
    """A scratch folder `routelens-{tag}-{pid}-{host}-*` under `folder` (default: the system's temporary
    folder, $TMPDIR), removed at the end; the scratch of dead runs there is removed first.
    `hidden` puts a dot in front, for scratch inside a user's output folder."""
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    if not re.fullmatch(r"[a-z]+", tag):
        raise ValueError(f"temp_dir tag {tag!r} must be lower-case letters")  # internal: callers pass literals
    lead = f"{'.' if hidden else ''}{TAG}-{tag}-"
    clean_stale(folder, f"{lead}*")
    path = _make_temp_dir(folder, f"{lead}{os.getpid()}-{HOST}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

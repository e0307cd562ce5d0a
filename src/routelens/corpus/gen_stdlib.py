"""The `code` and `prose` domains of the built-in corpus, cut from the Python standard library.

Every Python installation ships its standard library as source, so these two domains need no
download: `code` is the library's own Python files, `prose` is the English documentation written
inside them (module, class and function docstrings, plus the language reference topics that
`pydoc` ships in `pydoc_data.topics`), cleaned into plain paragraphs.

Only the part of the library that every distribution installs is used: packages that Linux
distributions split off or leave out (tests, IDLE, tkinter, lib2to3, distutils, ensurepip) and
installed third-party packages are skipped, so that the same seed and Python version give the
same bytes everywhere.
"""

from __future__ import annotations

import ast
import inspect
import os
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

# Directories never read: third-party packages, and parts of the library that distributions
# package separately (or not at all), which would make the corpus differ between machines.
_SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        "lib-dynload",
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "distutils",
        "ensurepip",
        "__phello__",
        "encodings",  # codec tables: data, not code, and boilerplate docstrings
    }
)
_NOT_CODE = ("pydoc_data/",)  # text data written as Python: read as prose, not as code
_SKIP_FILE_PREFIXES = ("_sysconfigdata",)  # build-specific, generated at install time

CODE_DOC_BYTES = 4000  # a code document gathers top-level blocks up to about this size
PROSE_DOC_BYTES = 2000  # a prose document gathers paragraphs of one source up to this size

# A line that opens a new top-level (or class-level) definition: where code documents may be cut.
_BLOCK_START = re.compile(r"^( {0,4})(def |class |async def |@)")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Path | None = None) -> list[Path]:
    """The standard library's `.py` files, sorted by relative path (the same list on every machine)."""
    root = root or stdlib_root()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-"))
        found += [Path(dirpath) / f for f in filenames if f.endswith(".py") and not f.startswith(_SKIP_FILE_PREFIXES)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # a handful of files use another encoding: skipped, deterministically


def _non_blank_lines(text: str) -> list[str]:
    """Lines with trailing space removed and blank ones dropped: documents may not contain blank lines.

    `splitlines` also splits on form feeds and other separators that a reader would take for line
    breaks, so no separator survives inside a line.
    """
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def _group(pieces: list[str], limit: int) -> Iterator[str]:
    """Join consecutive pieces with newlines into documents of at most `limit` bytes; a longer
    piece is cut at line ends (a single line longer than that stays whole)."""
    current: list[str] = []
    size = 0
    for piece in _cut_long(pieces, limit):
        n = len(piece.encode()) + 1
        if current and size + n > limit:
            yield "\n".join(current)
            current, size = [], 0
        current.append(piece)
        size += n
    if current:
        yield "\n".join(current)


def _cut_long(pieces: list[str], limit: int) -> Iterator[str]:
    for piece in pieces:
        if len(piece.encode()) <= limit:
            yield piece
        else:
            yield from _group(piece.split("\n"), limit)


def code_file_documents(text: str) -> list[str]:
    """One source file cut at definition boundaries into documents of about CODE_DOC_BYTES."""
    lines = _non_blank_lines(text)
    blocks: list[list[str]] = [[]]
    for i, line in enumerate(lines):
        starts = _BLOCK_START.match(line) and not (i and lines[i - 1].lstrip().startswith("@"))
        if starts and blocks[-1]:
            blocks.append([])
        blocks[-1].append(line)
    return list(_group(["\n".join(b) for b in blocks if b], CODE_DOC_BYTES))


def code_documents(rng: random.Random, root: Path | None = None) -> Iterator[str]:
    """Documents of the `code` domain: files in a seeded random order, each cut into blocks."""
    root = root or stdlib_root()
    files = [p for p in stdlib_sources(root) if not p.relative_to(root).as_posix().startswith(_NOT_CODE)]
    rng.shuffle(files)
    for path in files:
        text = _read_source(path)
        if text:
            yield from code_file_documents(text)


# --- prose --------------------------------------------------------------------------------------

_PROSE_END = (".", "!", "?")
_MARKUP = re.compile(
    r":(?:func|class|meth|mod|attr|data|exc|const|term|ref|pep|rfc|keyword|envvar|option):`~?([^`<]*?)(?:\s*<[^>]*>)?`"
)


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of a documentation text that read as English sentences, each on one line.

    Kept: unindented paragraphs of at least six words that end like a sentence and are mostly
    letters. Dropped: doctest examples, indented code, parameter tables, headings, lists of names.
    reStructuredText roles (:func:`name`) are reduced to their text.
    """
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [line for line in para.splitlines() if line.strip()]
        if not lines or lines[0][:1].isspace():
            continue  # indented: code, a literal block or a continuation of a list
        if any(line.lstrip().startswith((">>>", "...", "$ ", "* ", "- ", "|", "+--", "===", "---")) for line in lines):
            continue
        joined = " ".join(" ".join(lines).split())  # one line, single spaces
        joined = _MARKUP.sub(r"\1", joined).replace("``", "")
        if len(joined.split()) < 6 or not joined.endswith(_PROSE_END):
            continue
        letters = sum(ch.isalpha() or ch == " " for ch in joined)
        if letters < 0.85 * len(joined):
            continue
        out.append(joined)
    return out


def _docstrings(node: ast.AST) -> Iterator[str]:
    """Module, class and function docstrings in source order (depth first).

    Only statement blocks are walked (docstrings live nowhere else), which skips the expression
    nodes that make up most of a syntax tree.
    """
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=False)
        if doc:
            yield inspect.cleandoc(doc)
    for field in ("body", "orelse", "handlers", "finalbody", "cases"):
        for child in getattr(node, field, None) or ():
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                yield from _docstrings(child)


def _topics() -> dict[str, str]:
    """The language reference topics that `help()` shows, shipped with every Python."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped-down installations
        return {}
    return topics


def _source_paragraphs(path: Path) -> list[str]:
    try:
        tree = ast.parse(_read_source(path) or "")
    except SyntaxError:
        return []
    return [para for doc in _docstrings(tree) for para in prose_paragraphs(doc)]


def prose_documents(rng: random.Random, root: Path | None = None) -> Iterator[str]:
    """Documents of the `prose` domain, no paragraph repeated.

    Sources (one reference topic, or one source file's docstrings) come in a seeded random order
    and are read lazily, so a small corpus does not parse the whole library.
    """
    topics = _topics()
    sources: list[str | Path] = sorted(topics) + stdlib_sources(root)
    rng.shuffle(sources)
    seen: set[str] = set()
    for source in sources:
        paragraphs = prose_paragraphs(topics[source]) if isinstance(source, str) else _source_paragraphs(source)
        fresh = []
        for para in paragraphs:  # duplicates within one source too (overloads share docstrings)
            if para not in seen:
                seen.add(para)
                fresh.append(para)
        yield from _group(fresh, PROSE_DOC_BYTES)

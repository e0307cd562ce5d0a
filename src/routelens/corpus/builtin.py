"""The built-in corpus: four domains of text that need no download, the same bytes for a seed.

    from routelens.corpus.builtin import write_builtin_corpus
    paths = write_builtin_corpus("corpus/", seed=0)   # {"code": corpus/code.txt, "prose": ..., ...}

`routelens demo` trains its model on it, and any command that takes `--corpus NAME=PATH` can read
its files. Domains (see `BuiltinDomain`): `code` and `prose` are cut from the installed Python
standard library (gen_stdlib), `math` and `data` are generated (mathgen, gen_data). Each domain
is one `.txt` file, documents separated by one blank line, none inside a document. Same seed and
same Python version give the same bytes (the standard library's sources differ between versions).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path

from routelens.atomic import write_text
from routelens.corpus.gen_data import data_documents
from routelens.corpus.gen_stdlib import code_documents, prose_documents
from routelens.corpus.mathgen import math_documents
from routelens.errors import RoutelensError

DEFAULT_SIZE_BYTES = 1_000_000  # per domain; `prose` holds at most about 1.1 MB (all the library has)


class BuiltinDomain(StrEnum):
    CODE = "code"  # Python standard library sources
    PROSE = "prose"  # English docstrings and reference topics of the standard library
    MATH = "math"  # DeepMind-Mathematics-style questions and answers
    DATA = "data"  # CSV tables, JSON records, server logs, INI files


_SOURCES: dict[BuiltinDomain, Callable[[random.Random], Iterator[str]]] = {
    BuiltinDomain.CODE: code_documents,
    BuiltinDomain.PROSE: prose_documents,
    BuiltinDomain.MATH: math_documents,
    BuiltinDomain.DATA: data_documents,
}


def domain_documents(domain: BuiltinDomain | str, seed: int = 0, size_bytes: int = DEFAULT_SIZE_BYTES) -> list[str]:
    """The documents of one domain: taken in order until they reach `size_bytes` (UTF-8, counting
    the blank-line separators), or until the source runs out (only `prose` can)."""
    if size_bytes <= 0:
        raise RoutelensError(f"size {size_bytes} bytes is not positive; ask for at least 1 KB per domain.")
    domain = BuiltinDomain(domain)
    # One random stream per domain, so that a domain's text does not depend on the others'.
    rng = random.Random(f"{seed}:{domain.value}")
    docs: list[str] = []
    total = 0
    for doc in _SOURCES[domain](rng):
        lines = [line.rstrip() for line in doc.splitlines() if line.strip()]
        if not lines:
            continue
        doc = "\n".join(lines)
        docs.append(doc)
        total += len(doc.encode()) + 2
        if total >= size_bytes:
            break
    return docs


def write_builtin_corpus(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size_bytes: int = DEFAULT_SIZE_BYTES,
    domains: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Write `<out_dir>/<domain>.txt` for every domain (or those named) and return {domain: path}.

    Each file is written under a temporary name and renamed, so an interrupted run leaves no
    half-written file. Existing files of the same names are replaced (the output is a pure
    function of seed, size and Python version). `out_dir` is locked while it is written
    (`routelens.lock`), so a second writer into it is refused in one line.
    """
    from routelens.lock import output_lock

    if size_bytes <= 0:
        raise RoutelensError(
            f"--size-kb {size_bytes / 1000:g} is not positive; give the size of each domain in kB, e.g. --size-kb 1000."
        )
    try:
        chosen = [BuiltinDomain(d) for d in (domains or list(BuiltinDomain))]
    except ValueError as exc:
        names = ", ".join(d.value for d in BuiltinDomain)
        raise RoutelensError(f"{exc}; choose domains among {names}.") from None
    with output_lock(out_dir, what="corpus builtin"):
        return _write_corpus(Path(out_dir), chosen, seed, size_bytes, progress)


def _write_corpus(
    out: Path, chosen: list[BuiltinDomain], seed: int, size_bytes: int, progress: bool
) -> dict[str, Path]:
    """The body of `write_builtin_corpus`, run with `out` locked."""
    if out.exists() and not out.is_dir():
        raise RoutelensError(f"--out {out} is a file; give a directory for the corpus files.")
    out.mkdir(parents=True, exist_ok=True)
    from routelens.progress import progress_bar

    paths: dict[str, Path] = {}
    with progress_bar(disable=not progress, transient=True) as bar:
        task = bar.add_task("corpus", total=len(chosen), status="")
        for domain in chosen:
            bar.update(task, status=domain.value)
            path = out / f"{domain.value}.txt"
            write_text(path, "\n\n".join(domain_documents(domain, seed, size_bytes)) + "\n")
            paths[domain.value] = path
            bar.advance(task)
    return paths

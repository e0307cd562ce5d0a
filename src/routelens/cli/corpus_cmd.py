"""`routelens corpus ...`: corpora that need no download.

routelens corpus builtin --out corpus/
routelens corpus builtin --out corpus/ --seed 1 --size-kb 200 --domain code --domain math
routelens train --corpus code=corpus/code.txt --corpus math=corpus/math.txt ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import UserErrorGroup, console
from routelens.corpus.builtin import (
    DEFAULT_SIZE_BYTES,
    BuiltinDomain,
    write_builtin_corpus,
)


def builtin(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write <domain>.txt files into (created if missing).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed: same seed and Python version give the same bytes.")
    ] = 0,
    size_kb: Annotated[
        int, typer.Option("--size-kb", help="Size of each domain in kB (prose stops at ~1100 kB: all the library has).")
    ] = DEFAULT_SIZE_BYTES // 1000,
    domain: Annotated[
        list[BuiltinDomain] | None,
        typer.Option("--domain", help="Write only this domain (repeatable). Default: code, prose, math, data."),
    ] = None,
) -> None:
    """Write the built-in multi-domain corpus: one .txt per domain, documents separated by blank lines.

    code: the Python standard library's sources. prose: its English docstrings and reference topics.
    math: DeepMind-Mathematics-style questions with answers. data: CSV, JSON, logs and INI records.

        routelens corpus builtin --out corpus/
        routelens corpus builtin --out corpus/ --size-kb 100 --domain math
    """
    # checks --size-kb and the domains, then locks --out while it writes
    paths = write_builtin_corpus(out, seed=seed, size_bytes=size_kb * 1000, domains=domain or None, progress=True)
    for name, path in paths.items():
        size = path.stat().st_size
        note = "  (all the source has)" if size < size_kb * 1000 else ""
        console.print(f"{name:>6}  {size / 1e3:8.0f} kB  {path}{note}", highlight=False)
    specs = " ".join(f"--corpus {name}={path}" for name, path in paths.items())
    console.print(f"use with: {specs}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    corpus_app = typer.Typer(cls=UserErrorGroup, help="Corpora that need no download.", no_args_is_help=True)
    corpus_app.command("builtin")(builtin)
    app.add_typer(corpus_app, name="corpus")

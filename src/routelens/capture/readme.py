"""Regenerate the README's list of supported families from `routelens families`' rows.

    python -m routelens.capture.readme            # verify every family here, record the version, rewrite the block
    python -m routelens.capture.readme --check    # exit 1 if the block is out of date

Run it on each transformers release the suite passed on (after moving the pin in
.ci/constraints.txt): the families that verify get that version in capture/verified_on.json,
which `routelens families` shows as `verified_on`.

The block sits between `<!-- families:start -->` and `<!-- families:end -->`; tests/test_readme.py
checks that it is up to date with the installed transformers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from routelens.capture.listing import family_rows, markdown
from routelens.errors import RoutelensError

START, END = "<!-- families:start -->", "<!-- families:end -->"


def block_of(text: str) -> str:
    """The generated text between the markers of `text`."""
    if START not in text or END not in text:
        raise RoutelensError(f"the README has no {START} ... {END} block; add the two markers where the list goes.")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def updated(text: str) -> str:
    """`text` with its families block regenerated."""
    block_of(text)  # checks the markers
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{markdown(family_rows())}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    readme = Path(__file__).resolve().parents[3] / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in args:
        return 0 if new == text else 1
    import transformers

    from routelens.capture.listing import record_verified
    from routelens.capture.verify import VERIFIED, verify_family

    verdicts = [verify_family(r.model_type) for r in family_rows()]
    failed = [f"{v.model_type}: {v.verify}" for v in verdicts if not v.ok]
    if failed:
        print("\n".join(failed), file=sys.stderr)
        return 1
    record_verified([v.model_type for v in verdicts if v.verify == VERIFIED], transformers.__version__)
    readme.write_text(updated(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

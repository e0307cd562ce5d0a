"""Reading corpora named by SPEC strings: `NAME=PATH`.

PATH forms:
  file.txt        documents separated by blank lines; a file with no blank line at all is
                  read one document per line (the layout of C4-style dumps)
  file.jsonl      one JSON object per line, field `text`
  file.parquet    column `text`
  file.conllu     Universal Dependencies; one sentence = one document, words keep gold UPOS
  hf:DATASET[/CONFIG]:SPLIT[:COLUMN]   any `datasets.load_dataset` source (column default `text`);
                  DATASET is a local path or a hub id `owner/name`; a third `/` segment is CONFIG.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from routelens.errors import RoutelensError


class CorpusKind(StrEnum):
    TXT = "txt"
    JSONL = "jsonl"
    PARQUET = "parquet"
    CONLLU = "conllu"
    HF = "hf"


@dataclass(frozen=True)
class Word:
    start: int  # character offset of the word's first character in Document.text
    end: int  # one past its last character
    upos: str  # gold (or tagger) Universal POS tag


@dataclass
class Document:
    text: str
    words: list[Word] | None = None  # only for annotated corpora (.conllu, --tagger)


@dataclass(frozen=True)
class CorpusSpec:
    name: str  # domain label recorded in the trace
    source: str  # the PATH part, as given
    kind: CorpusKind

    def __str__(self) -> str:
        return f"{self.name}={self.source}"


_SUFFIXES = {
    ".txt": CorpusKind.TXT,
    ".jsonl": CorpusKind.JSONL,
    ".parquet": CorpusKind.PARQUET,
    ".conllu": CorpusKind.CONLLU,
}


def growing_batches(items: Iterable, first: int = 8, most: int = 256) -> Iterator[list]:
    """`items` in lists of `first`, then twice as many each time up to `most`: batched work (the
    tokenizer, the tagger) stays efficient on a long corpus, while a small token budget reads only
    the first few documents instead of a whole batch of them."""
    size, batch = max(1, first), []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch, size = [], min(most, size * 2)
    if batch:
        yield batch


def parse_corpus_spec(spec: str) -> CorpusSpec:
    """`NAME=PATH` -> CorpusSpec, checking that the file exists and its form is known."""
    name, sep, source = spec.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise RoutelensError(f"corpus {spec!r} is not NAME=PATH; write it as e.g. --corpus web=c4.txt")
    if source.startswith("hf:"):
        if len(source.split(":")) not in (3, 4):
            raise RoutelensError(f"corpus {spec!r}: write a datasets source as hf:DATASET[/CONFIG]:SPLIT[:COLUMN]")
        return CorpusSpec(name, source, CorpusKind.HF)
    path = Path(source)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise RoutelensError(
            f"corpus {spec!r}: unknown file type {path.suffix or '(none)'!r}; use .txt, .jsonl, .parquet, .conllu or hf:..."
        )
    if not path.is_file():
        raise RoutelensError(f"corpus {spec!r}: no file at {path}; check the path.")
    return CorpusSpec(name, source, kind)


def iter_documents(spec: CorpusSpec | str) -> Iterator[Document]:
    """Stream the documents of a corpus in file order (empty documents are skipped)."""
    if isinstance(spec, str):
        spec = parse_corpus_spec(spec)
    reader = {
        CorpusKind.TXT: _read_txt,
        CorpusKind.JSONL: _read_jsonl,
        CorpusKind.PARQUET: _read_parquet,
        CorpusKind.CONLLU: _read_conllu,
        CorpusKind.HF: _read_hf,
    }[spec.kind]
    try:
        for doc in reader(spec):
            if doc.text.strip():
                yield doc
    except UnicodeDecodeError as exc:
        # Read strictly: a latin-1 or binary file decoded with replacement would be traced as U+FFFD
        # tokens with no warning, a corpus nobody meant to measure.
        raise RoutelensError(
            f"{spec.source} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded); convert it to "
            f"UTF-8, e.g. `iconv -f latin1 -t utf-8 {spec.source} > utf8{Path(spec.source).suffix}`."
        ) from None


def _read_txt(spec: CorpusSpec) -> Iterator[Document]:
    with open(spec.source, encoding="utf-8") as fh:
        line_per_doc = not any(not line.strip() for line in fh)
    if line_per_doc:
        with open(spec.source, encoding="utf-8") as fh:
            yield from (Document(line.rstrip("\n")) for line in fh)
        return
    lines: list[str] = []
    with open(spec.source, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                lines.append(line)
            elif lines:
                yield Document("".join(lines).rstrip("\n"))
                lines = []
    if lines:
        yield Document("".join(lines).rstrip("\n"))


def _read_jsonl(spec: CorpusSpec) -> Iterator[Document]:
    with open(spec.source, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RoutelensError(
                    f"{spec.source} line {n} is not JSON ({exc.msg}); fix or remove that line."
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise RoutelensError(
                    f"{spec.source} line {n} has no string field 'text'; each line needs {{\"text\": ...}}."
                )
            yield Document(record["text"])


def _read_parquet(spec: CorpusSpec) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(spec.source)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise RoutelensError(f"{spec.source} is not a readable Parquet file ({exc}).") from None
    if "text" not in pf.schema_arrow.names:
        raise RoutelensError(f"{spec.source} has no column 'text' (columns: {', '.join(pf.schema_arrow.names)}).")
    kind = pf.schema_arrow.field("text").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise RoutelensError(
            f"{spec.source}: column 'text' holds {kind}, not strings; write the documents' text as a string column."
        )
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield Document(text)


def _read_hf(spec: CorpusSpec) -> Iterator[Document]:
    import datasets

    parts = spec.source[3:].split(":")
    dataset, split = parts[0], parts[1]
    column = parts[2] if len(parts) > 2 else "text"
    config = None
    if not Path(dataset).exists() and dataset.count("/") == 2:
        dataset, config = dataset.rsplit("/", 1)
    try:
        ds = datasets.load_dataset(dataset, config, split=split, streaming=True)
    except Exception as exc:  # datasets raises many types (FileNotFound, connection, config) for one cause
        raise RoutelensError(f"corpus {spec}: datasets could not load {dataset!r} split {split!r} ({exc}).") from None
    for _n, row in enumerate(ds):
        if column not in row:
            raise RoutelensError(f"corpus {spec}: no column {column!r} (columns: {', '.join(row)}); add :COLUMN.")
        if row[column]:
            yield Document(str(row[column]))


def _read_conllu(spec: CorpusSpec) -> Iterator[Document]:
    import conllu
    from conllu.exceptions import ParseException

    with open(spec.source, encoding="utf-8") as fh:
        try:
            for n, sentence in enumerate(conllu.parse_incr(fh), 1):
                short = [t for t in sentence if len(t) < 10]
                if short:
                    raise RoutelensError(
                        f"{spec.source} is not valid CoNLL-U: sentence {n} has a line with {len(short[0])} "
                        "of the 10 tab-separated fields; fix the file."
                    )
                doc = sentence_document(sentence)
                if doc.words:
                    yield doc
        except ParseException as exc:
            raise RoutelensError(f"{spec.source} is not valid CoNLL-U ({exc}); fix the file.") from None


def sentence_document(sentence) -> Document:
    """Rebuild a sentence's surface text from its tokens and give each syntactic word its span.

    Multi-word tokens (ids like 3-4, e.g. "don't" = do + n't) carry the surface form; their
    words get sub-spans when their forms concatenate to it, else the whole span goes to the
    first word (the others get empty spans and so no model token). Empty nodes (ids like 8.1)
    are not in the text and are skipped. SpaceAfter=No is respected.
    """
    pieces: list[str] = []
    words: list[Word] = []
    offset = 0
    covered_until = 0  # last word id covered by a multi-word token
    items = list(sentence)
    for i, tok in enumerate(items):
        tid = tok["id"]
        if isinstance(tid, tuple) and len(tid) == 3 and tid[1] == ".":
            continue  # empty node
        if isinstance(tid, tuple):  # multi-word token range (start, '-', end)
            first, last = tid[0], tid[2]
            form = tok["form"] or ""
            members = [t for t in items[i + 1 :] if isinstance(t["id"], int) and first <= t["id"] <= last]
            if "".join(m["form"] or "" for m in members) == form:
                pos = offset
                for m in members:
                    words.append(Word(pos, pos + len(m["form"] or ""), m["upos"] or "X"))
                    pos += len(m["form"] or "")
            else:
                for j, m in enumerate(members):
                    end = offset + len(form) if j == 0 else offset
                    words.append(Word(offset, end, m["upos"] or "X"))
            covered_until = last
            offset = _append(pieces, form, tok, offset)
            continue
        if tid <= covered_until:
            continue
        form = tok["form"] or ""
        words.append(Word(offset, offset + len(form), tok["upos"] or "X"))
        offset = _append(pieces, form, tok, offset)
    return Document("".join(pieces).rstrip(" "), words)


def _append(pieces: list[str], form: str, tok, offset: int) -> int:
    misc = tok.get("misc") or {}
    space = "" if misc.get("SpaceAfter") == "No" else " "
    pieces.append(form + space)
    return offset + len(form) + len(space)

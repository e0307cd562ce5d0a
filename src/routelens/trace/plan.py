"""Planning: corpora -> documents -> token windows -> shards, deterministically from the inputs.

    documents --tokenize--> ids (+ the word and UPOS tag of each token) --cut--> windows of
    <= seq_len tokens --group whole documents--> Shard(index, windows, rows, next_doc)

Documents longer than `seq_len` are cut into consecutive windows that the model sees
separately: a token's context is its own window only (no overlap, no carried state), while
`position` keeps counting across windows. Shards hold whole documents and record the global
document number after them (`next_doc`), which is how a resumed run, in this process or on
Ray, checks that a shard on disk is the plan's shard. The plan needs a tokenizer, never a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from routelens.corpus import CorpusKind, CorpusSpec, Document, iter_documents, parse_corpus_spec
from routelens.corpus.readers import growing_batches
from routelens.corpus.upos import UPOS_CODE
from routelens.errors import RoutelensError
from routelens.trace.config import TraceConfig


@dataclass
class Window:
    """Up to seq_len consecutive tokens of one document, with where its rows go in the shard."""

    ids: np.ndarray  # (t,) int32
    row: int  # offset of its first row in the shard
    doc_id: int
    domain: int
    start: int  # position of its first token within the document
    word_index: np.ndarray | None = None  # (t,) int32
    upos: np.ndarray | None = None  # (t,) int32 codes


@dataclass
class Shard:
    index: int
    windows: list[Window] = field(default_factory=list)
    rows: int = 0
    next_doc: int = 0

    def counts(self, num_domains: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents, tokens) per domain: a document's first window starts at position 0."""
        docs = np.zeros(num_domains, np.int64)
        tokens = np.zeros(num_domains, np.int64)
        for w in self.windows:
            docs[w.domain] += w.start == 0
            tokens[w.domain] += len(w.ids)
        return docs, tokens


# -- the inputs ---------------------------------------------------------------------------------
def parse_specs(corpora: Sequence[str | CorpusSpec] | Mapping[str, str]) -> list[CorpusSpec]:
    if isinstance(corpora, Mapping):
        corpora = [f"{k}={v}" for k, v in corpora.items()]
    specs = [c if isinstance(c, CorpusSpec) else parse_corpus_spec(c) for c in corpora]
    if not specs:
        raise RoutelensError("no corpus given; add --corpus NAME=PATH.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RoutelensError(f"corpus names must be unique (got {', '.join(names)}); rename one NAME=.")
    return specs


def preflight(specs: list[CorpusSpec]) -> None:
    """Fail before writing anything: empty corpora, and malformed CoNLL-U anywhere in the file."""
    for spec in specs:
        docs = iter_documents(spec)
        if spec.kind is CorpusKind.CONLLU:
            found = sum(1 for _ in docs)  # parses the whole file: errors surface now, not mid-trace
        else:
            found = next(docs, None) is not None
        if not found:
            raise RoutelensError(f"corpus {spec} holds no text; check the file or drop it.")


def corpus_identity(spec: CorpusSpec) -> dict:
    ident = {"spec": str(spec)}
    path = Path(spec.source)
    if spec.kind is not CorpusKind.HF and path.is_file():
        ident["bytes"] = path.stat().st_size
    return ident


def records_pos(specs: list[CorpusSpec], config: TraceConfig) -> bool:
    """Whether the trace gets word_index and upos columns (gold CoNLL-U, or a tagger)."""
    return any(s.kind is CorpusKind.CONLLU for s in specs) or config.tagger is not None


def check_resumable(shard: Shard, done: Mapping[int, dict], where: Path) -> bool:
    """True when the plan's `shard` is already on disk (`done`: {index: shard metadata});
    a shard there that ends at another document was written by another plan."""
    if shard.index not in done:
        return False
    if done[shard.index].get("next_doc") != shard.next_doc:
        raise RoutelensError(f"{where} was written with other shard boundaries; pass --overwrite to start again.")
    return True


# -- the plan -----------------------------------------------------------------------------------
class Planner:
    """Cuts the corpora into the shards of the trace; the same shards wherever it runs."""

    def __init__(self, tokenizer, config: TraceConfig, specs: list[CorpusSpec]):
        self.tokenizer, self.config, self.specs = tokenizer, config, specs

    def shards(self) -> Iterator[Shard]:
        shard = Shard(0)
        doc_id = 0
        seq_len = self.config.window()
        for d, spec in enumerate(self.specs):
            remaining = self.config.max_tokens
            for ids, words, upos in self._tokenized(spec):
                if remaining is not None:
                    ids, words, upos = ids[:remaining], _cut(words, remaining), _cut(upos, remaining)
                    remaining -= len(ids)
                if len(ids) == 0:
                    continue
                for start in range(0, len(ids), seq_len):
                    stop = start + seq_len
                    shard.windows.append(
                        Window(
                            ids[start:stop],
                            shard.rows,
                            doc_id,
                            d,
                            start,
                            _cut(words, stop, start),
                            _cut(upos, stop, start),
                        )
                    )
                    shard.rows += len(ids[start:stop])
                doc_id += 1
                if shard.rows >= self.config.shard_tokens:
                    shard.next_doc = doc_id
                    yield shard
                    shard = Shard(shard.index + 1)
                if remaining == 0:
                    break
        if shard.windows:
            shard.next_doc = doc_id
            yield shard

    def _tokenized(self, spec: CorpusSpec, group: int = 256):
        """(ids, word_index, upos) per document; tokenizes in groups for the fast tokenizer."""
        docs = iter_documents(spec)
        if self.config.tagger is not None and spec.kind is not CorpusKind.CONLLU:
            from routelens.corpus.tagger import tag_documents

            model = self.config.tagger.partition(":")[2] or "en_core_web_sm"
            docs = tag_documents(docs, model=model)
        # No more than max_tokens of a corpus are traced, so a 9 MB one-line document need not be
        # tokenized whole (gigabytes of offsets): its text is cut to a generous CUT_CHARS per token;
        # only when the cut text gives too few tokens (MARGIN beyond the budget, which no merge at the
        # cut reaches) is the whole text tokenized after all. Tagged documents keep their whole text.
        limit = self.config.max_tokens * CUT_CHARS if self.config.max_tokens else None
        for batch in growing_batches(docs, most=group):
            with_words = any(doc.words is not None for doc in batch)
            cut = [limit is not None and doc.words is None and len(doc.text) > limit for doc in batch]
            enc = self.tokenizer(
                [doc.text[:limit] if c else doc.text for doc, c in zip(batch, cut)],
                add_special_tokens=True,
                return_offsets_mapping=with_words,
                return_attention_mask=False,
            )
            for i, doc in enumerate(batch):
                if cut[i] and len(enc["input_ids"][i]) < self.config.max_tokens + CUT_MARGIN:
                    enc["input_ids"][i] = self.tokenizer(doc.text, add_special_tokens=True)["input_ids"]
                ids = np.asarray(enc["input_ids"][i], dtype=np.int32)
                if doc.words is None:
                    yield ids, None, None
                    continue
                yield ids, *_align_words(doc, enc["offset_mapping"][i])


CUT_CHARS = 64  # characters per token kept before tokenizing a document longer than the budget
CUT_MARGIN = 64  # tokens the cut text must give beyond the budget (a merge at the cut stays past it)


def _align_words(doc: Document, offsets) -> tuple[np.ndarray, np.ndarray]:
    """Each token gets the word that holds its first non-space character (-1: none, e.g. BOS)."""
    owner = np.full(len(doc.text) + 1, -1, dtype=np.int32)
    for w, word in enumerate(doc.words):
        owner[word.start : word.end] = w
    tags = np.array([UPOS_CODE.get(w.upos, -1) for w in doc.words] + [-1], dtype=np.int32)
    word_index = np.full(len(offsets), -1, dtype=np.int32)
    for t, (s, e) in enumerate(offsets):
        for c in range(s, e):
            if not doc.text[c].isspace():
                word_index[t] = owner[c]
                break
    return word_index, tags[word_index]  # tags[-1] is the trailing -1


def _cut(values: np.ndarray | None, stop: int, start: int = 0) -> np.ndarray | None:
    return None if values is None else values[start:stop]


def batch_rows(windows: list[Window], batch_size: int, *, equal_lengths: bool = False) -> list[list[int]]:
    """The windows of each forward pass, by index: longest first, so that a batch holds windows of
    similar length and little padding. `equal_lengths`: only windows of one length share a batch
    (no padding at all), for families whose routing padding moves (`routelens.models.overrides`)."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    if not equal_lengths:
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and len(windows[out[-1][0]].ids) == len(windows[i].ids):
            out[-1].append(i)
        else:
            out.append([i])
    return out

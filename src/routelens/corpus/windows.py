"""Corpora as model input: documents -> `<s> tokens </s>` id arrays, a seeded held-out split per
domain, and fixed-length windows. What training holds out, evaluation, ablation and pruning read
back from the seed and `val_tokens` alone (routelens.training builds its batches on this).

Per domain, a seeded permutation of the documents picks held-out documents until they hold
`val_tokens` tokens (never more than half the documents).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routelens.corpus.readers import CorpusSpec, iter_documents, parse_corpus_spec
from routelens.errors import RoutelensError


@dataclass
class CorpusTexts:
    """Raw documents of each named corpus, in the order the specs were given."""

    domains: list[str]
    documents: dict[str, list[str]]

    def interleaved(self) -> list[str]:
        """Documents round-robin across domains (so a bounded prefix samples every domain)."""
        lists = [self.documents[d] for d in self.domains]
        return [docs[i] for i in range(max(map(len, lists))) for docs in lists if i < len(docs)]


def read_corpora(
    corpus_specs: Sequence[str | CorpusSpec], *, min_docs: int = 2, max_chars: int | None = None
) -> CorpusTexts:
    """Read the documents of every corpus (names must be distinct), all of them or the first ones
    holding `max_chars` characters."""
    if not corpus_specs:
        raise RoutelensError("no corpus given; pass at least one --corpus NAME=PATH (see `routelens corpus builtin`).")
    specs = [parse_corpus_spec(s) if isinstance(s, str) else s for s in corpus_specs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RoutelensError(f"corpus names {names} repeat; give each --corpus a distinct NAME.")
    documents = {}
    for spec in specs:
        docs, chars = [], 0
        for doc in iter_documents(spec):
            docs.append(doc.text)
            chars += len(doc.text)
            if max_chars is not None and chars >= max_chars:
                break
        if len(docs) < min_docs:
            raise RoutelensError(
                f"corpus {spec} has {len(docs)} document(s); this needs at least {min_docs} (training holds some out)."
            )
        documents[spec.name] = docs
    return CorpusTexts(names, documents)


def encode_documents(tokenizer, texts: list[str], batch: int = 512) -> list[np.ndarray]:
    """`<s> ... </s>` token ids (int32) of each text."""
    eos = tokenizer.eos_token_id
    out = []
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start : start + batch], add_special_tokens=True)["input_ids"]
        out.extend(np.asarray([*ids, eos], dtype=np.int32) for ids in enc)
    return out


def _domain_rng(seed: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(domain.encode())])


def split_held_out(docs: list[np.ndarray], domain: str, seed: int, val_tokens: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices) of one domain's encoded documents, both in file order."""
    order = _domain_rng(seed, domain).permutation(len(docs))
    held, total = [], 0
    for i in order[: len(docs) // 2]:
        if total >= val_tokens:
            break
        held.append(int(i))
        total += len(docs[i])
    held_set = set(held)
    return [i for i in range(len(docs)) if i not in held_set], sorted(held)


def windows_of(stream: np.ndarray, seq_len: int, pad_last: bool) -> np.ndarray:
    """Cut a token stream into (n, seq_len) rows; the tail is dropped or padded with -1."""
    n_full = len(stream) // seq_len
    rows = stream[: n_full * seq_len].reshape(n_full, seq_len)
    tail = stream[n_full * seq_len :]
    if pad_last and len(tail) > 1:
        rows = np.concatenate([rows, np.pad(tail, (0, seq_len - len(tail)), constant_values=-1)[None]])
    return rows


def held_out_windows(
    encoded: dict[str, list[np.ndarray]], seq_len: int, seed: int, val_tokens: int
) -> dict[str, np.ndarray]:
    """The held-out windows of each domain, as `build_train_data` makes them."""
    out = {}
    for domain, docs in encoded.items():
        _, held = split_held_out(docs, domain, seed, val_tokens)
        out[domain] = windows_of(np.concatenate([docs[i] for i in held]), seq_len, pad_last=True)
    return out

"""Training data: corpora -> token streams, a held-out split per domain, and a batch order that is a
pure function of (seed, step).

Each document becomes `<s> tokens </s>`. Per domain, a seeded permutation of the documents picks
held-out documents until they hold `val_tokens` tokens (never more than half the documents); the
rest, shuffled across domains, are concatenated into one stream cut into `seq_len` windows. Batch
`step` takes windows `step*B .. step*B+B-1` of an endless sequence of seeded epoch permutations, so
resuming at step s needs nothing but s, and the same split is rebuilt by evaluation code
(`routing_health`) from the seed and `val_tokens` recorded in `training.json`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routelens.corpus import CorpusSpec, iter_documents, parse_corpus_spec
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


@dataclass
class TrainData:
    """Everything the training loop reads."""

    windows: np.ndarray  # (num_windows, seq_len) int32 training windows
    val: dict[str, np.ndarray]  # domain -> (n, seq_len) int32 held-out windows (last one padded with -1)
    train_tokens: dict[str, int]  # domain -> tokens in the training stream
    unigram_counts: dict[str, np.ndarray]  # domain -> (vocab,) token counts of its training documents
    seed: int

    def batch(self, step: int, batch_size: int) -> tuple[np.ndarray, int, int]:
        """(batch_size, seq_len) windows of `step`, with the epoch and offset it starts at."""
        n = len(self.windows)
        idx = np.arange(step * batch_size, (step + 1) * batch_size)
        epochs, offsets = idx // n, idx % n
        perms = {e: np.random.default_rng([self.seed, 7, int(e)]).permutation(n) for e in np.unique(epochs)}
        rows = np.array([perms[e][o] for e, o in zip(epochs, offsets)])
        return self.windows[rows], int(epochs[0]), int(offsets[0])


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


def build_train_data(
    corpora: CorpusTexts, tokenizer, *, seq_len: int, seed: int, val_tokens: int, vocab_size: int
) -> TrainData:
    encoded = {d: encode_documents(tokenizer, corpora.documents[d]) for d in corpora.domains}
    train_docs, train_tokens, counts = [], {}, {}
    for domain in corpora.domains:
        docs = encoded[domain]
        train_idx, _ = split_held_out(docs, domain, seed, val_tokens)
        chosen = [docs[i] for i in train_idx]
        train_docs.extend(chosen)
        train_tokens[domain] = int(sum(map(len, chosen)))
        counts[domain] = np.bincount(np.concatenate(chosen), minlength=vocab_size).astype(np.int64)
    order = np.random.default_rng([seed, 3]).permutation(len(train_docs))
    stream = np.concatenate([train_docs[i] for i in order])
    windows = windows_of(stream, seq_len, pad_last=False)
    if len(windows) == 0:
        raise RoutelensError(
            f"the training text holds {len(stream)} tokens, less than one window of {seq_len}; use a bigger corpus or --seq-len."
        )
    val = held_out_windows(encoded, seq_len, seed, val_tokens)
    return TrainData(windows, val, train_tokens, counts, seed)

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

from dataclasses import dataclass

import numpy as np

from routelens.corpus.windows import (
    CorpusTexts,
    encode_documents,
    held_out_windows,
    read_corpora,
    split_held_out,
    windows_of,
)
from routelens.errors import RoutelensError

# The corpus-to-windows half lives in routelens.corpus.windows (evaluation and pruning read it
# without importing training); its names stay importable from here.
__all__ = [
    "CorpusTexts",
    "TrainData",
    "build_train_data",
    "encode_documents",
    "held_out_windows",
    "read_corpora",
    "split_held_out",
    "windows_of",
]


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

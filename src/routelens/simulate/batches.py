"""Orders in which a trace's tokens are batched, and one streaming pass that counts each batch's
assignments per layer and expert.

Three orders:

- consecutive: batches of B consecutive tokens in trace order (a prefill-like view: one long
  sequence, or many, cut into chunks);
- shuffled (`ShuffledBatches`): the same tokens in one seeded uniformly random order, the
  locality control;
- decode (`DecodeBatches`): B sequences decoding together, one token of each per step, as a
  serving engine batches concurrent requests (continuous batching: each document is a
  sequence; when one ends, the next document of the trace takes its slot, so steps keep B
  sequences until the trace runs out).

`stream_counts` makes one pass over the trace and returns per-batch counts (layers, batches, E)
for a range of batches, in the consecutive order and in any labelled order; memory is the
range's counts and the labellers' small state, never a per-token array.
"""

from __future__ import annotations

import heapq

import numpy as np

from routelens.errors import RoutelensError
from routelens.store import Trace


class ShuffledBatches:
    """The batch of every token under one seeded uniformly random order of the tokens, handed out
    token by token in trace order, without storing the order.

    Batches of a random order are a uniformly random partition of the tokens into groups of the
    batch sizes. Tokens are labelled in blocks: the number of a block's tokens that fall in each
    batch is one multivariate hypergeometric draw from the batches' free slots, and those labels
    are shuffled over the block's tokens; this is exactly the joint law of the labels under a
    uniform permutation. State: the free slots (8 bytes per batch) and one block of labels (at
    least 16 per batch, so each draw's O(batches) cost is amortised). Blocks are fixed by the
    trace length and batch size, so the labels do not depend on how the trace is chunked.
    """

    def __init__(self, tokens: int, batch_tokens: int, seed: int):
        nb = -(-tokens // batch_tokens)
        self.free = np.full(nb, batch_tokens, np.int64)
        self.free[-1] = tokens - (nb - 1) * batch_tokens
        self.left = tokens
        self.block = max(1 << 16, 16 * nb)
        self.rng = np.random.default_rng(seed)
        self._labels = np.zeros(0, np.int64)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        """Batches (n,) of the next n tokens in trace order."""
        parts = []
        while n:
            if self._pos == len(self._labels):
                m = min(self.block, self.left)
                counts = self.rng.multivariate_hypergeometric(self.free, m)
                self.free -= counts
                self.left -= m
                self._labels = np.repeat(np.arange(len(self.free)), counts)
                self.rng.shuffle(self._labels)
                self._pos = 0
            m = min(n, len(self._labels) - self._pos)
            parts.append(self._labels[self._pos : self._pos + m])
            self._pos += m
            n -= m
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class DecodeBatches:
    """The decode step of every token when `concurrent` sequences decode together, one token of
    each per step, handed out token by token in trace order.

    Documents are the sequences, taken in trace order; each starts in the slot that frees first
    (ties: the lowest slot) at the step that slot frees, and its i-th token runs at start + i.
    `sizes` (steps,) are the tokens of each step: `concurrent` until too few documents are left.
    State: one start step per document (8 bytes each).
    """

    def __init__(self, doc_lengths: np.ndarray, concurrent: int):
        self.lengths = np.asarray(doc_lengths, np.int64)
        free = [(0, slot) for slot in range(concurrent)]  # (step the slot frees, slot)
        self.starts = np.empty(len(self.lengths), np.int64)
        for d, n in enumerate(self.lengths.tolist()):
            step, slot = heapq.heappop(free)
            self.starts[d] = step
            heapq.heappush(free, (step + n, slot))
        ends = self.starts + self.lengths
        self.steps = int(ends.max(initial=0))
        change = np.bincount(self.starts, minlength=self.steps + 1) - np.bincount(ends, minlength=self.steps + 1)
        self.sizes = np.cumsum(change)[: self.steps]  # sequences active at each step
        self._doc, self._offset = 0, 0

    def rewind(self) -> None:
        """Hand out steps from the trace's first token again (for another pass)."""
        self._doc, self._offset = 0, 0

    def take(self, n: int) -> np.ndarray:
        """Steps (n,) of the next n tokens in trace order."""
        out = np.empty(n, np.int64)
        done = 0
        while done < n:
            m = min(n - done, int(self.lengths[self._doc]) - self._offset)
            out[done : done + m] = self.starts[self._doc] + self._offset + np.arange(m)
            done += m
            self._offset += m
            if self._offset == self.lengths[self._doc]:
                self._doc, self._offset = self._doc + 1, 0
        return out


def document_lengths(trace: Trace, rows: int = 1 << 20) -> np.ndarray:
    """Tokens of each document (documents, ) in trace order (a run of equal doc_id is one)."""
    lengths, prev = [], None
    for chunk in trace.iter_chunks(rows=rows):
        doc = chunk.doc_id
        cuts = np.flatnonzero(doc[1:] != doc[:-1]) + 1
        runs = np.diff(np.concatenate([[0], cuts, [len(doc)]])).tolist()
        if prev is not None and doc[0] == prev:
            lengths[-1] += runs.pop(0)
        lengths += runs
        prev = doc[-1]
    return np.asarray(lengths, np.int64)


def stream_counts(
    trace: Trace,
    batch_tokens: int,
    lo: int,
    hi: int,
    labels=None,
    loads: np.ndarray | None = None,
    rows: int = 1 << 20,
    *,
    consecutive: bool = True,
):
    """One pass over the trace: per-batch counts (layers, hi - lo, E) int32 of batches lo..hi-1 in
    consecutive order (None without `consecutive`) and, with `labels` (an object whose `take(n)`
    gives the batches of the next n tokens: `ShuffledBatches`, `DecodeBatches`), in that order;
    adds per-layer expert loads into `loads` (layers, E) when given. Counting goes one layer at a
    time, so a bincount's output is one layer's (batches, E) cells, never the whole group's."""
    L, E, B, G = len(trace.layers), trace.num_ids, batch_tokens, hi - lo
    real = np.zeros((L, G, E), np.int32) if consecutive else None
    other = np.zeros((L, G, E), np.int32) if labels is not None else None
    offset = 0
    for chunk in trace.iter_chunks(rows=rows):
        n, x = len(chunk), chunk.experts
        if x.size and int(x.max()) >= E:
            raise RoutelensError(f"the trace at {trace.path} routes to expert ids >= num_ids={E}; re-trace it.")
        if loads is not None:
            loads += np.bincount(((np.arange(L) * E)[None, :, None] + x).reshape(-1), minlength=L * E).reshape(L, E)
        a, b = max(offset, lo * B), min(offset + n, hi * B)  # rows of this chunk in batches lo..hi-1
        if consecutive and a < b:
            first, span = a // B, (b - 1) // B - a // B + 1
            _count(
                real[:, first - lo : first - lo + span], (np.arange(a, b) // B - first) * E, x[a - offset : b - offset]
            )
        if labels is not None:
            label = labels.take(n)
            keep = (label >= lo) & (label < hi)
            _count(other, (label[keep] - lo) * E, x[keep])
        offset += n
    return real, other


def _count(out: np.ndarray, base: np.ndarray, experts: np.ndarray) -> None:
    """out (L, batches, E) += counts of experts (m, L, k) whose batch offsets * E are `base` (m,)."""
    L, nb, E = out.shape
    for layer in range(L):
        key = (base[:, None] + experts[:, layer]).reshape(-1)
        np.add(out[layer], np.bincount(key, minlength=nb * E).reshape(nb, E), out=out[layer], casting="unsafe")

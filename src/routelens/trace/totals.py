"""The manifest's totals, tallied shard by shard the same way by every backend.

Counts come from the shards themselves (`Shard.counts`), so a shard skipped on resume counts
exactly as when it was written, and the order in which shards finish does not matter.
"""

from __future__ import annotations

import numpy as np

from routelens.corpus import CorpusSpec
from routelens.errors import RoutelensError


class Totals:
    """Tokens, documents, shards and bytes of a trace, overall and per corpus."""

    def __init__(self, specs: list[CorpusSpec]):
        self.specs = specs
        self.docs = np.zeros(len(specs), np.int64)  # (domains,)
        self.tokens = np.zeros(len(specs), np.int64)  # (domains,)
        self.shards = 0
        self.bytes = 0

    @property
    def rows(self) -> int:
        return int(self.tokens.sum())

    def add(self, docs: np.ndarray, tokens: np.ndarray, nbytes: int = 0) -> None:
        """One shard: its documents and tokens per domain, its size on disk if already known."""
        self.shards += 1
        self.docs += docs
        self.tokens += tokens
        self.bytes += int(nbytes)

    def status(self) -> str:
        return f"{self.rows:,} tokens"

    def manifest_part(self, num_layers: int) -> dict:
        """{"totals", "corpora"} for the manifest; refuses a trace of no tokens."""
        tokens = self.rows
        if tokens == 0:
            raise RoutelensError("the corpora produced no tokens; check the files.")
        totals = {
            "tokens": tokens,
            "documents": int(self.docs.sum()),
            "shards": self.shards,
            "bytes": self.bytes,
            "bytes_per_token_layer": self.bytes / (tokens * num_layers),
        }
        corpora = [
            {"name": s.name, "source": s.source, "kind": str(s.kind), "documents": int(d), "tokens": int(t)}
            for s, d, t in zip(self.specs, self.docs, self.tokens)
        ]
        return {"totals": totals, "corpora": corpora}

"""Writes reference_analysis.json: the analysis of a small planted trace by the code of commit
bb3088a (before issue 25 made the locality null exact), which test_reference.py compares the
current `analyze` with key by key. Rerun only to move the reference on purpose:

    PYTHONPATH=src python tests/analysis/data/make_reference.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from routelens.analysis import analyze
from routelens.synthetic import SyntheticSpec, write_synthetic_trace

HERE = Path(__file__).parent
# Unbalanced first choices (so the permuted null differs from uniform), locality planted, documents
# of varied length split across small chunks.
SPEC = SyntheticSpec(
    num_docs=60,
    doc_len=(5, 160),
    layers=(0, 2, 5),
    num_experts=8,
    top_k=2,
    domains=("a", "b"),
    repeat=0.3,
    first_dist={"a": np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]), "b": np.full(8, 1 / 8)},
    vocab_size=300,
    seed=11,
)
# The old null averaged `locality_permutations` shuffles: many of them make its Monte Carlo error small.
CONFIG = {"bootstrap": 200, "seed": 0, "locality_permutations": 400, "rows": 3000, "max_distance": 8, "progress": False}


def trace(out: Path) -> Path:
    return write_synthetic_trace(out / "trace", SPEC)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = analyze(trace(Path(tmp)), **CONFIG)
    result["meta"].pop("trace")  # a temporary path
    (HERE / "reference_analysis.json").write_text(json.dumps(result, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

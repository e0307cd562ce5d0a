"""Fixtures of the report tests: a synthetic trace with a hostile vocabulary, its analysis, and
one report built from them (shared by the tests that only read it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from routelens import Trace, open_trace
from routelens.synthetic import SyntheticSpec, write_synthetic_trace

LAYERS = (0, 3, 7)  # not contiguous on purpose
E, K = 8, 2
# Token strings that must come out escaped, or with their whitespace intact.
SPECIAL = ["<script>alert(1)</script>", "a & b", "\n", "    ", "\tx", "\"q'", " def", "</span>"]


def vocabulary(size: int) -> list[str]:
    return SPECIAL + [f"w{i}" for i in range(len(SPECIAL), size)]


def make_trace(path: Path, *, vocab_size: int = 40, **overrides) -> Trace:
    """A synthetic trace (planted: expert 0 over-used in `code`, repeat 0.4) with a vocab.json."""
    spec = dict(
        num_docs=12,
        doc_len=(3, 50),
        layers=LAYERS,
        num_experts=E,
        top_k=K,
        domains=("code", "prose"),
        repeat=0.4,
        first_dist={"code": np.array([0.44] + [0.08] * 7)},
        vocab_size=vocab_size,
        seed=0,
    )
    spec.update(overrides)
    write_synthetic_trace(path, SyntheticSpec(**spec))
    (path / "vocab.json").write_text(json.dumps({"tokens": vocabulary(vocab_size)}))
    return open_trace(path)


def extras(layers: list[str], num_experts: int, top_k: int) -> dict:
    """Hand-made results of the POS analysis and the simulators, shaped as their JSON."""
    rng = np.random.default_rng(1)
    tags = ["NOUN", "VERB", "PUNCT"]
    shares = {
        layer: {t: (rng.dirichlet(np.ones(num_experts)) * top_k).round(4).tolist() for t in tags} for layer in layers
    }
    spec = {
        layer: {
            t: {
                "expert": int(np.argmax(shares[layer][t])),
                "max_share": float(max(shares[layer][t])),
                "kl": 0.1,
                "p_value": 0.002 if t == "PUNCT" else 0.4,
                "n": 100,
            }
            for t in tags
        }
        for layer in layers
    }
    pos = {
        "specialization": spec,
        "shares": shares,
        "chance_share": top_k / num_experts,
        "layers": [int(x) for x in layers],
        "counts": {"NOUN": 120, "VERB": 80, "PUNCT": 60},
        "probe": {"accuracy": 0.81, "macro_f1": 0.7, "baseline_majority": 0.4, "baseline_word": 0.85, "shuffled": 0.41},
        "ablation": {
            "single": {x: 0.5 for x in layers},
            "prefix": {str(i + 1): 0.6 for i in range(len(layers))},
            "drop": {x: 0.7 for x in layers},
            "full": 0.78,
        },
        "tsne": {
            "points": rng.normal(size=(30, 2)).tolist(),
            "labels": [tags[i % 3] for i in range(30)],
            "silhouette": {t: 0.1 for t in tags},
            "silhouette_shuffled": {t: 0.0 for t in tags},
        },
    }
    caps = range(1, num_experts + 1)
    cache = {p: {x: {str(c): c / num_experts for c in caps} for x in layers} for p in ("lru", "belady")}
    balance = {
        p: {cf: {"dropped": d, "imbalance_max_mean": 1.2} for cf, d in (("1.0", 0.05), ("2.0", 0.0))}
        for p in ("round_robin", "balanced")
    }
    saturation = {
        "checkpoints": ["step-100", "step-200", "final"],
        "tokens": [500, 500, 500],
        "layers": [int(x) for x in layers],
        "topk": {x: [0.31 + 0.01 * i, 0.62, 1.0] for i, x in enumerate(layers)},
        "top1": {x: [0.2, 0.5, 1.0] for x in layers},
        "baseline": {"topk": top_k / num_experts, "top1": 1 / num_experts},
    }
    return {"pos": pos, "saturation": saturation, "cache": cache, "balance": balance}


@dataclass
class Built:
    trace: Trace
    analysis: dict
    html_path: Path
    figures: Path
    text: str


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """One full report (every section) of a small synthetic trace."""
    from routelens.analysis import analyze
    from routelens.pruning.importance import expert_importance
    from routelens.report import write_report
    from routelens.simulate import simulate_distinct

    root = tmp_path_factory.mktemp("report")
    trace = make_trace(root / "trace")
    analysis = analyze(trace, bootstrap=20, progress=False)
    analysis.update(extras([str(x) for x in LAYERS], E, K))
    analysis["importance"] = expert_importance(trace, progress=False)
    analysis.update(simulate_distinct(trace, batch=4))
    out = write_report(trace, analysis, root / "out" / "report.html", progress=False)
    return Built(trace, analysis, out, out.with_name("report_figures"), out.read_text(encoding="utf-8"))

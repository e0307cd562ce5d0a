"""Time of the whole POS analysis of a 25k-word trace (the budget: 2 minutes on 2 cores).

A planted trace is written in the real format: 2,000 sentences of ~12.5 words drawn with the
UD English EWT tag frequencies, each word 1..3 model tokens, routing random except that the
first choice depends on the tag at some layers (so the probe has something to find). Then the
stages of `analyze_pos` are timed one by one, and the whole call end to end:

  load          streaming the trace and selecting one row per word
  permutation   specialization with its within-document permutation test (500 shuffles)
  bootstrap     the max_share interval over sentences (200 replicates)
  probe         the MLP on paths, the word-form and shuffled-path baselines, over 5 splits
  ablation      3L-1 MLP probes (the probe's own classifier); the linear one for comparison
  path map      t-SNE of 1,000 paths and per-tag silhouettes

Times are wall-clock and process CPU (all threads): on a shared machine the wall time grows
with the other load, the CPU time much less.

The permutation test is also compared with the same counts done by `np.add.at` (the usual
scatter-add) in the same run, on a few shuffles, scaled to 500.

    python benchmarks/bench_pos.py                                 # demo-sized model and OLMoE-sized
    python benchmarks/bench_pos.py --shape 16x64x8 --words 25000   # one shape: layers x experts x k
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the planted-trace writer in tests/

# UD English EWT dev UPOS frequencies (rounded), so class imbalance is realistic.
TAG_FREQ = {
    "NOUN": 0.17,
    "PUNCT": 0.12,
    "VERB": 0.11,
    "PRON": 0.09,
    "ADP": 0.08,
    "DET": 0.07,
    "AUX": 0.06,
    "PROPN": 0.06,
    "ADJ": 0.06,
    "ADV": 0.05,
    "CCONJ": 0.03,
    "PART": 0.03,
    "NUM": 0.02,
    "SCONJ": 0.02,
    "X": 0.01,
    "INTJ": 0.01,
    "SYM": 0.01,
}


def planted_rows(words: int, layers: int, experts: int, top_k: int, seed: int = 0):
    from routelens.corpus.upos import UPOS_TAGS
    from tests.analysis.pos_planted import random_routing

    rng = np.random.default_rng(seed)
    sentences = max(2, words // 12)
    per_sentence = np.diff(np.linspace(0, words, sentences + 1).astype(int))
    tag_codes = np.array([UPOS_TAGS.index(t) for t in TAG_FREQ])
    p = np.array(list(TAG_FREQ.values()))
    word_tags = tag_codes[rng.choice(len(p), size=words, p=p / p.sum())]
    pieces = rng.integers(1, 4, size=words)
    word_doc = np.repeat(np.arange(sentences), per_sentence)
    word_idx = np.arange(words) - np.repeat(np.cumsum(per_sentence) - per_sentence, per_sentence)
    rows = {
        "doc_id": np.repeat(word_doc, pieces).astype(np.int64),
        "word_index": np.repeat(word_idx, pieces).astype(np.int32),
        "upos": np.repeat(word_tags, pieces).astype(np.int32),
        "token_id": rng.integers(1, 5000, size=int(pieces.sum())).astype(np.int32),
    }
    n = len(rows["doc_id"])
    routing = random_routing(n, layers, experts, top_k, rng)  # (n, L, k)
    # At every third layer the first choice follows the tag for 60% of tokens.
    for layer in range(0, layers, 3):
        hit = rng.random(n) < 0.6
        routing[hit, layer, 0] = rows["upos"][hit] % experts
        clash = routing[:, layer, 1:] == routing[:, layer, :1]
        routing[:, layer, 1:][clash] = (routing[:, layer, 1:][clash] + 1) % experts
    return rows, routing


def scatter_add_counts(experts, tags, num_tags, num_experts, permutations, seed=0):
    """Reference: the same permutation counts by np.add.at, one shuffle at a time."""
    rng = np.random.default_rng(seed)
    n, L, _k = experts.shape
    layer = np.broadcast_to(np.arange(L)[None, :, None], experts.shape)
    for _ in range(permutations):
        shuffled = tags[rng.permutation(n)]
        counts = np.zeros((L, num_tags, num_experts), np.int64)
        np.add.at(
            counts,
            (layer, np.broadcast_to(shuffled[:, None, None], experts.shape), experts),
            1,
        )


CPU: dict[str, float] = {}  # process CPU seconds of the last timed call


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU["last"] = time.process_time() - cpu
    return out, time.perf_counter() - start


def bench(shape: str, words: int, workdir: Path) -> None:
    from routelens.analysis.pos import PosConfig, analyze_pos, load_word_rows
    from routelens.analysis.pos_map import path_map
    from routelens.analysis.pos_probe import group_splits, layer_ablation, run_probe
    from routelens.analysis.pos_specialization import permutation_test, share_intervals
    from routelens.corpus.upos import UPOS_TAGS
    from routelens.store.reader import open_trace
    from tests.analysis.pos_planted import write_pos_trace

    L, E, k = (int(x) for x in shape.split("x"))
    rows, routing = planted_rows(words, L, E, k)
    path = write_pos_trace(workdir / shape, rows, routing, tuple(range(L)), E, shard_rows=50_000)
    trace = open_trace(path)
    cfg = PosConfig()
    print(f"\n== {words:,} words, {trace.num_tokens:,} tokens, {L} layers x {E} experts, top-{k} ==")
    w, t_load = timed(lambda: load_word_rows(trace, cfg.policy))
    T = len(UPOS_TAGS)
    _, t_perm = timed(lambda: permutation_test(w.experts, w.tags, T, E, groups=w.doc_id, permutations=cfg.permutations))
    best = np.zeros((L, T), dtype=np.int64)
    _, t_boot = timed(lambda: share_intervals(w.experts, w.tags, w.doc_id, best, T, replicates=cfg.bootstrap, seed=0))
    splits = group_splits(w.groups(), seed=0, splits=cfg.splits)
    probe, t_probe = timed(lambda: run_probe(w.experts, w.tags, w.form, w.groups(), E, splits=splits))
    ablation, t_abl = timed(lambda: layer_ablation(w.experts, w.tags, splits[0], E, list(range(L))))
    linear, t_lin = timed(lambda: layer_ablation(w.experts, w.tags, splits[0], E, list(range(L)), classifier="linear"))
    _, t_map = timed(lambda: path_map(w.experts, w.tags, E, UPOS_TAGS, points=cfg.tsne_points))
    _, t_total = timed(lambda: analyze_pos(trace, progress=False))
    cpu_total = CPU["last"]
    few = 10
    _, t_ref = timed(lambda: scatter_add_counts(w.experts, w.tags, T, E, few))
    t_ref *= cfg.permutations / few
    for name, t in [
        ("load", t_load),
        ("permutation", t_perm),
        ("bootstrap", t_boot),
        ("probe", t_probe),
        ("ablation", t_abl),
        ("(linear)", t_lin),
        ("path map", t_map),
    ]:
        print(f"  {name:<12} {t:7.2f} s")
    print(
        f"  {'analyze_pos':<12} {t_total:7.2f} s wall, {cpu_total:.2f} s CPU  ({t_total / 120:.0%} of the 2-minute budget)"
    )
    print(f"  permutation test: bincount {t_perm:.2f} s vs np.add.at {t_ref:.2f} s (x{t_ref / t_perm:.1f})")
    print(
        f"  probe accuracy {probe['accuracy']:.3f}, majority {probe['baseline_majority']:.3f}, "
        f"word {probe['baseline_word']:.3f}, shuffled {probe['shuffled']:.3f}; "
        f"best single layer {ablation['best_single']} (linear ablation: {linear['best_single']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=25_000, help="words in the planted trace")
    parser.add_argument(
        "--shape",
        action="append",
        help="LAYERSxEXPERTSxK (repeatable); default 4x8x2 and 16x64x8",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_pos_"))
    try:
        for shape in args.shape or ["4x8x2", "16x64x8"]:
            bench(shape, args.words, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

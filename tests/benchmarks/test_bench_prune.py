"""The statistics `benchmarks/bench_prune.py` prints: the standard error of a pooled loss over
held-out windows, against a Monte-Carlo ground truth, quiet where there is no spread and where two
settings do not differ, and its difference from random carrying random's seed spread."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_prune.py"
_spec = importlib.util.spec_from_file_location("bench_prune", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _windows(rng, n=400, per_token_sd=1.0, mean=3.0):
    """n windows of 20-128 tokens, each token's loss iid normal: the window sums (a sum of t such
    losses is normal with mean t x mean and variance t x sd^2) and the counts."""
    tokens = rng.integers(20, 129, n).astype(float)
    return rng.normal(mean * tokens, per_token_sd * np.sqrt(tokens)), tokens


def test_standard_error_matches_the_spread_of_repeated_samples():
    rng = np.random.default_rng(0)
    losses, ses = [], []
    for _ in range(1000):
        nll, tokens = _windows(rng)
        losses.append(nll.sum() / tokens.sum())
        ses.append(bench.ratio_se(nll, tokens))
    assert np.mean(ses) == pytest.approx(np.std(losses, ddof=1), rel=0.1)


def test_no_spread_gives_zero_and_a_real_difference_is_found():
    tokens = np.full(50, 100.0)
    assert bench.ratio_se(3.0 * tokens, tokens) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    nll, tokens = _windows(rng)
    # planted null: a setting equal to the other but for noise -> the paired difference stays within 3 s.e.
    same = nll + rng.normal(0, 2.0, len(nll))
    diff = (same - nll).sum() / tokens.sum()
    assert abs(diff) < 3 * bench.ratio_se(same - nll, tokens)
    # planted effect: 0.05 nats per token worse -> more than 3 s.e. away
    worse = nll + 0.05 * tokens + rng.normal(0, 2.0, len(nll))
    diff = (worse - nll).sum() / tokens.sum()
    assert diff == pytest.approx(0.05, abs=0.01) and diff > 3 * bench.ratio_se(worse - nll, tokens)


def test_difference_from_random_adds_the_seed_spread():
    rows = {"4/random": {"loss_per_run": [4.0, 4.6, 4.3]}, "4/reap": {"vs_random_se": 0.03}}
    seed_var = np.var([4.0, 4.6, 4.3], ddof=1) / 3
    assert bench.versus_random_se(rows, "4/reap") == pytest.approx(np.sqrt(0.03**2 + seed_var))
    rows["4/random"]["loss_per_run"] = [4.3]  # one draw: no seed spread to add
    assert bench.versus_random_se(rows, "4/reap") == pytest.approx(0.03)

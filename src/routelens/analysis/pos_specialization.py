"""Part-of-speech specialization of experts: which expert takes which tag, and is it chance?

For layer l, tag p and expert e the share S(l, p, e) = N(tokens of tag p with e among their
top-k at l) / N(tokens of tag p); it sums to k over experts, and a router blind to the tag gives
k/E for every expert. Because real routers are unbalanced, the test statistic is the KL
divergence of the tag's expert distribution from the layer's overall one, and its significance
comes from a permutation test. Tags are shuffled *within documents* (sentences), so the overall
distribution and every document's tag mix stay fixed and only the within-document tag-routing
link is broken: when routing and the tag mix both vary by document (every real corpus), a
corpus-wide shuffle would call that document effect a tag effect. The p-value is read off a
chi-square scaled to the permutation null's mean and variance (reachable below 1/(1+P), which
a correction over layers x tags needs), beside the plain Monte-Carlo p-value; `adjust_pvalues`
corrects them for the layers x tags tests (docs/pos.md says why each choice).

Everything here is a pure function of numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from routelens.errors import RoutelensError


def tag_expert_counts(experts: np.ndarray, tags: np.ndarray, num_tags: int, num_experts: int) -> np.ndarray:
    """N(tokens of tag p with expert e among their top-k at layer l) as an (L, T, E) int64 array.

    `experts` is (n, L, k) (first choice first), `tags` is (n,) codes in 0..num_tags-1.
    """
    _n, L, _k = experts.shape
    base = _layer_expert_index(experts, num_tags, num_experts)  # (n, L*k)
    idx = base + (tags.astype(np.int64) * num_experts)[:, None]
    counts = np.bincount(idx.ravel(), minlength=L * num_tags * num_experts)
    return counts.reshape(L, num_tags, num_experts)  # (L, T, E)


def _layer_expert_index(experts: np.ndarray, num_tags: int, num_experts: int) -> np.ndarray:
    """Flat bin of (layer, tag=0, expert) per choice, (n, L*k) int64; add tag*E to place a tag."""
    n, L, k = experts.shape
    layer_offset = (np.arange(L, dtype=np.int64) * num_tags * num_experts)[None, :, None]
    return (layer_offset + experts.astype(np.int64)).reshape(n, L * k)


def shares_from_counts(counts: np.ndarray, tag_totals: np.ndarray) -> np.ndarray:
    """S(l, p, e) = counts / N(tokens of tag p): (L, T, E); each present tag's row sums to k.

    `tag_totals` is (T,), the number of tokens of each tag; absent tags give NaN rows.
    """
    totals = tag_totals.astype(np.float64)[None, :, None]  # (1, T, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def kl_from_overall(counts: np.ndarray) -> np.ndarray:
    """KL(P_lp || Q_l) in nats, (L, T): P_lp = tag p's expert distribution, Q_l = the layer's overall.

    Both are normalised per assignment (they sum to 1). Q_l > 0 wherever P_lp > 0, since Q_l
    includes tag p's own assignments, so the divergence is always finite. NaN for absent tags.
    """
    overall = counts.sum(1, keepdims=True).astype(np.float64)  # (L, 1, E)
    log_q = np.log(np.where(overall > 0, overall / overall.sum(-1, keepdims=True), 1.0))
    return _kl(counts.astype(np.float64), log_q)


def _kl(counts: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    rows = counts.sum(-1, keepdims=True)  # (..., T, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / rows
        terms = np.where(counts > 0, p * (np.log(np.where(p > 0, p, 1.0)) - log_q), 0.0)
    kl = terms.sum(-1)
    return np.where(rows[..., 0] > 0, kl, np.nan)


def within_group_permuter(groups: np.ndarray | None, n: int, rng: np.random.Generator):
    """A function returning a fresh random permutation of 0..n-1 that moves rows only within
    their group (groups (n,), any ints; None: one group, the plain shuffle)."""
    if groups is None:
        return lambda: rng.permutation(n)
    order = np.argsort(groups, kind="stable")  # rows grouped
    sorted_groups = groups[order]
    rank = np.cumsum(np.r_[0, sorted_groups[1:] != sorted_groups[:-1]]).astype(np.float64)  # (n,) group number

    def permute() -> np.ndarray:
        # Sorting group number + U(0, 1) shuffles each group's block and keeps blocks in place.
        perm = np.empty(n, dtype=np.int64)
        perm[order] = order[np.argsort(rank + rng.random(n), kind="stable")]
        return perm

    return permute


@dataclass(frozen=True)
class NullTest:
    """The permutation test of the tag-expert KL, per (layer, tag): arrays (L, T), NaN for absent tags."""

    observed: np.ndarray  # KL of each tag's expert distribution from the layer's overall one
    p_permutation: np.ndarray  # (1 + #{KL_perm >= KL_obs}) / (1 + P)
    null_mean: np.ndarray  # mean of the permutation null's KL
    null_sd: np.ndarray  # its standard deviation
    p_value: np.ndarray  # scaled chi-square with the null's mean and variance (see moment_matched_pvalues)


def permutation_test(
    experts: np.ndarray,
    tags: np.ndarray,
    num_tags: int,
    num_experts: int,
    *,
    groups: np.ndarray | None = None,
    permutations: int = 500,
    seed: int = 0,
) -> NullTest:
    """The KL of every (layer, tag) against its permutation null, tags shuffled within `groups`
    (documents; None: across all rows, exchangeable tokens).

    Each permutation recounts with one `bincount` over all choices; the null's first two moments
    and the Monte-Carlo tail count are kept, not the replicates.
    """
    if permutations < 1:
        raise RoutelensError(f"permutations={permutations} must be at least 1; use e.g. 500.")
    n, L, _k = experts.shape
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} rows, experts {n}")
    base = _layer_expert_index(experts, num_tags, num_experts)  # (n, L*k)
    size = L * num_tags * num_experts
    tag_offset = tags.astype(np.int64) * num_experts
    observed_counts = np.bincount((base + tag_offset[:, None]).ravel(), minlength=size).reshape(
        L, num_tags, num_experts
    )
    observed = kl_from_overall(observed_counts)  # (L, T)
    overall = observed_counts.sum(1, keepdims=True).astype(np.float64)  # unchanged by permuting tags
    log_q = np.log(np.where(overall > 0, overall / overall.sum(-1, keepdims=True), 1.0))
    permute = within_group_permuter(groups, n, np.random.default_rng(seed))
    reached = np.zeros((L, num_tags), dtype=np.int64)
    total = np.zeros((L, num_tags))
    total_sq = np.zeros((L, num_tags))
    # Float ties (e.g. a tag whose routing is already identical to the overall) count as reached.
    threshold = observed - 1e-12
    for _ in range(permutations):
        shuffled = tag_offset[permute()]
        counts = np.bincount((base + shuffled[:, None]).ravel(), minlength=size).reshape(L, num_tags, num_experts)
        kl = np.nan_to_num(_kl(counts.astype(np.float64), log_q))
        reached += kl >= threshold
        total += kl
        total_sq += kl * kl
    mean = total / permutations
    sd = np.sqrt(np.maximum(total_sq / permutations - mean * mean, 0.0) * permutations / max(permutations - 1, 1))
    absent = np.isnan(observed)
    p_perm = np.where(absent, np.nan, (1.0 + reached) / (1.0 + permutations))
    p = moment_matched_pvalues(observed, mean, sd, p_perm)
    nan = lambda a: np.where(absent, np.nan, a)  # noqa: E731
    return NullTest(observed, p_perm, nan(mean), nan(sd), nan(p))


def moment_matched_pvalues(observed: np.ndarray, mean: np.ndarray, sd: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Upper-tail p of `observed` under a scaled chi-square a * chi2(nu) with the null's mean and
    variance (a = var / (2 mean), nu = 2 mean^2 / var: Satterthwaite's match).

    Why this shape: 2 N KL is the G statistic, asymptotically chi-square for independent tokens;
    within-document dependence rescales it (a) and changes its effective degrees of freedom (nu),
    which the two moments of the permutation null capture. Where the null is degenerate (zero
    variance: no permutation changes the counts) the Monte-Carlo p (`fallback`) is kept.
    """
    from scipy.stats import chi2

    var = sd * sd
    ok = (var > 1e-300) & (mean > 0) & np.isfinite(observed)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(ok, var / (2 * mean), 1.0)
        dof = np.where(ok, 2 * mean * mean / np.where(ok, var, 1.0), 1.0)
        p = chi2.sf(np.where(ok, observed, 0.0) / scale, dof)
    return np.where(ok, p, fallback)


class Correction(StrEnum):
    FDR_BH = "fdr_bh"  # Benjamini-Hochberg: controls the false discovery rate
    HOLM = "holm"  # Holm-Bonferroni: controls the family-wise error rate
    NONE = "none"  # no correction (p_adjusted = p_value)


def adjust_pvalues(p: np.ndarray, method: Correction | str) -> np.ndarray:
    """Adjusted p-values for the family of finite entries of `p` (any shape; NaN stays NaN and is
    not a test). BH through scipy; Holm written out here because scipy has no Holm."""
    method = Correction(method)
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.isfinite(p)
    values = p[tested]
    if values.size == 0 or method is Correction.NONE:
        out[tested] = values
        return out
    if method is Correction.FDR_BH:
        from scipy.stats import false_discovery_control

        out[tested] = false_discovery_control(values, method="bh")
        return out
    # Holm: the i-th smallest of m p-values times (m - i + 1), made monotone, capped at 1.
    m = values.size
    order = np.argsort(values, kind="stable")
    stepped = np.maximum.accumulate(values[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[tested] = adjusted
    return out


def share_intervals(
    experts: np.ndarray,
    tags: np.ndarray,
    groups: np.ndarray,
    best: np.ndarray,
    num_tags: int,
    *,
    replicates: int,
    seed: int,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval over documents of S(l, p, best[l, p]): the share of tag p's
    rows with expert best[l, p] among their top-k at layer l. Returns (low, high), each (L, T).

    The expert is the observed best one, held fixed: an interval for that expert's share (the
    maximum re-taken in each replicate would be biased upward). Resampling whole documents is
    `distribution.bootstrap_totals`, the same code as the domain distances'.
    """
    from routelens.analysis.distribution import bootstrap_totals, percentile_interval

    n, L, _k = experts.shape
    T = num_tags
    shape = (L, T)
    if replicates <= 0 or n == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan)
    _, doc = np.unique(groups, return_inverse=True)
    D = int(doc.max()) + 1
    hit = (experts == best[:, tags].T[:, :, None]).any(axis=2)  # (n, L): the row's tag's best expert chosen
    key = (doc.astype(np.int64)[:, None] * L + np.arange(L)[None, :]) * T + tags.astype(np.int64)[:, None]  # (n, L)
    hits = np.bincount(key[hit], minlength=D * L * T).reshape(D, L * T)
    rows = np.bincount(doc * T + tags, minlength=D * T).reshape(D, T)
    boot = bootstrap_totals(
        np.concatenate([hits, rows], axis=1), replicates, np.random.default_rng(seed)
    )  # (B, L*T + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = boot[:, : L * T].reshape(-1, L, T) / boot[:, None, L * T :]
    return percentile_interval(share, level)

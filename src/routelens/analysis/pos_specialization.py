"""Part-of-speech specialization of experts: which expert takes which tag, and is it chance?

For layer l, tag p and expert e the share S(l, p, e) = N(tokens of tag p with e among their
top-k at l) / N(tokens of tag p); it sums to k over experts, and a router blind to the tag gives
k/E for every expert. Because real routers are unbalanced, the test statistic is the KL
divergence of the tag's expert distribution from the layer's overall one, and its significance
comes from a permutation test (tags shuffled across tokens, so the overall distribution stays
fixed and only the tag-routing link is broken).

Everything here is a pure function of numpy arrays.
"""

from __future__ import annotations

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


def permutation_pvalues(
    experts: np.ndarray,
    tags: np.ndarray,
    num_tags: int,
    num_experts: int,
    *,
    permutations: int = 500,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Observed KL (L, T) and its permutation p-values (L, T), with add-one smoothing.

    Under the null the tag labels are exchangeable across tokens: each permutation shuffles
    them, recounts with one `bincount` over all choices, and asks how often the shuffled KL
    reaches the observed one. p = (1 + #{KL_perm >= KL_obs}) / (1 + permutations), so the
    smallest attainable p is 1 / (1 + permutations). NaN for absent tags.
    """
    if permutations < 1:
        raise RoutelensError(f"permutations={permutations} must be at least 1; use e.g. 500.")
    n, L, _k = experts.shape
    base = _layer_expert_index(experts, num_tags, num_experts)  # (n, L*k)
    size = L * num_tags * num_experts
    tag_offset = tags.astype(np.int64) * num_experts
    observed_counts = np.bincount((base + tag_offset[:, None]).ravel(), minlength=size).reshape(
        L, num_tags, num_experts
    )
    observed = kl_from_overall(observed_counts)  # (L, T)
    overall = observed_counts.sum(1, keepdims=True).astype(np.float64)  # unchanged by permuting tags
    log_q = np.log(np.where(overall > 0, overall / overall.sum(-1, keepdims=True), 1.0))
    rng = np.random.default_rng(seed)
    reached = np.zeros((L, num_tags), dtype=np.int64)
    # Float ties (e.g. a tag whose routing is already identical to the overall) count as reached.
    threshold = observed - 1e-12
    for _ in range(permutations):
        shuffled = tag_offset[rng.permutation(n)]
        counts = np.bincount((base + shuffled[:, None]).ravel(), minlength=size).reshape(L, num_tags, num_experts)
        reached += _kl(counts.astype(np.float64), log_q) >= threshold
    pvalues = (1.0 + reached) / (1.0 + permutations)
    return observed, np.where(np.isnan(observed), np.nan, pvalues)

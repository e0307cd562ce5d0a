"""The path map: a 2-D t-SNE picture of routing paths coloured by part of speech.

A subsample of tokens is embedded with scikit-learn's t-SNE (after PCA to at most 50
dimensions, the usual preconditioning). Whether tags form clusters is measured, not eyeballed:
the silhouette of each tag is computed in the path space itself (Euclidean distance between
multi-hot paths, i.e. the square root of twice the number of differing expert choices), where
t-SNE's distortions cannot create clusters, and compared with the silhouette of the same points
with tags shuffled (the null: paths that carry no tag information).
"""

from __future__ import annotations

import numpy as np

from routelens.analysis.pos_probe import PathFeatures, path_features


def subsample_rows(tags: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `size` row indices, a uniform random sample (sorted); all rows if fewer."""
    n = len(tags)
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def per_tag_silhouette(X: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Mean silhouette of each label's points (needs 2 <= labels < points)."""
    from sklearn.metrics import silhouette_samples

    values = silhouette_samples(X, labels, metric="euclidean")
    return {int(t): float(values[labels == t].mean()) for t in np.unique(labels)}


def path_map(
    experts: np.ndarray,
    tags: np.ndarray,
    num_experts: int,
    tag_names: tuple[str, ...],
    *,
    features: PathFeatures | str = PathFeatures.TOPK,
    points: int = 1000,
    seed: int = 0,
) -> dict:
    """t-SNE of a subsample of paths and the silhouette of each tag against shuffled tags.

    Returns {points: [[x, y], ...], labels: [tag, ...], silhouette: {tag: s},
    silhouette_shuffled: {tag: s}, silhouette_mean, silhouette_shuffled_mean}; silhouettes are
    empty when fewer than two tags occur in the sample.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    rows = subsample_rows(tags, points, rng)
    X = path_features(experts[rows], num_experts, features).toarray()  # (m, L*E)
    labels = tags[rows]
    m = len(rows)
    out: dict = {
        "points": [],
        "labels": [tag_names[t] for t in labels],
        "silhouette": {},
        "silhouette_shuffled": {},
    }
    if m < 5:
        return out
    reduced = X
    if X.shape[1] > 50 and m > 50:
        reduced = PCA(n_components=50, random_state=seed).fit_transform(X)
    perplexity = float(min(30.0, (m - 1) / 3))
    # 500 iterations (sklearn's default is 1000): the map settles well before, at half the cost.
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        max_iter=500,
        random_state=seed,
    )
    emb = tsne.fit_transform(reduced)
    out["points"] = np.round(emb, 3).tolist()
    if 2 <= len(np.unique(labels)) < m:
        real = per_tag_silhouette(X, labels)
        shuffled = per_tag_silhouette(X, rng.permutation(labels))
        out["silhouette"] = {tag_names[t]: s for t, s in real.items()}
        out["silhouette_shuffled"] = {tag_names[t]: s for t, s in shuffled.items()}
        # Point-weighted means (= sklearn's silhouette_score) for a one-number summary.
        counts = {t: int((labels == t).sum()) for t in real}
        out["silhouette_mean"] = float(sum(real[t] * c for t, c in counts.items()) / m)
        out["silhouette_shuffled_mean"] = float(sum(shuffled[t] * c for t, c in counts.items()) / m)
    return out

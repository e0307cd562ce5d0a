"""Routing-path probes: how much of a token's part of speech can be read off its experts?

A token's routing path is its first-choice expert (or its top-k set) at every MoE layer,
encoded one-hot (multi-hot) in a sparse matrix of L*E columns. An MLP predicts the UPOS tag
from it, trained and tested on disjoint sentences, never on disjoint tokens of the same
sentence; sentences are grouped by their text (token ids), so an exactly duplicated sentence
never lands on both sides. Baselines come from the same splits: the majority tag, the most
frequent tag of the word form (a strong baseline: most English words have one tag), and the same
MLP on paths shuffled across tokens (a control that must fall to about the majority rate). Every
score is a mean and standard deviation over several group splits (5 by default).

Layer ablation refits the probe's own classifier (the MLP, on a random subset of the first
split's training rows) on each single layer, on the first i layers, and on all layers but one: a
tag that depends on which *pair* of experts a layer chose is invisible to a linear fit of the
multi-hot layer, which would misname `best_single` and `most_needed`. The logistic regression
stays available (`classifier="linear"`) for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp

from routelens.errors import RoutelensError


class PathFeatures(StrEnum):
    FIRST = "first"  # first-choice expert per layer, one-hot
    TOPK = "topk"  # the whole top-k set per layer, multi-hot


def path_features(
    experts: np.ndarray,
    num_experts: int,
    features: PathFeatures | str = PathFeatures.TOPK,
    *,
    keep_layers: list[int] | None = None,
) -> sp.csr_matrix:
    """Routing paths (n, L, k) -> sparse (n, L*E) float32; column l*E + e is expert e at layer l.

    `keep_layers` (layer positions) leaves the other layers' columns empty but keeps the width,
    so probes on different layer subsets share one coefficient layout (for warm starts).
    """
    features = PathFeatures(features)
    n, L, _ = experts.shape
    positions = np.arange(L) if keep_layers is None else np.asarray(keep_layers, dtype=np.int64)
    chosen = experts[:, positions]
    chosen = chosen[:, :, :1] if features is PathFeatures.FIRST else chosen  # (n, L', c)
    _, Lk, c = chosen.shape
    cols = (positions[None, :, None] * num_experts + chosen.astype(np.int64)).reshape(-1)
    indptr = np.arange(0, n * Lk * c + 1, Lk * c, dtype=np.int64)
    data = np.ones(n * Lk * c, dtype=np.float32)
    return sp.csr_matrix((data, cols, indptr), shape=(n, L * num_experts))


class AblationClassifier(StrEnum):
    MLP = "mlp"  # the probe's own classifier (default)
    LINEAR = "linear"  # multinomial logistic regression, warm-started (the earlier, cheaper ablation)


def split_by_document(doc_id: np.ndarray, *, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) with every document (group) wholly on one side."""
    return group_splits(doc_id, test_size=test_size, seed=seed, splits=1)[0]


def group_splits(
    groups: np.ndarray, *, test_size: float = 0.2, seed: int = 0, splits: int = 5
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`splits` random (train, test) row splits, each group (sentence text) wholly on one side."""
    from sklearn.model_selection import GroupShuffleSplit

    if len(np.unique(groups)) < 2:
        raise RoutelensError(
            "the POS probe needs at least 2 sentences (documents) to split into train and test; trace more text."
        )
    splitter = GroupShuffleSplit(n_splits=splits, test_size=test_size, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def majority_tag(tags: np.ndarray) -> int:
    return int(np.bincount(tags).argmax())


def word_form_predict(train_forms: np.ndarray, train_tags: np.ndarray, test_forms: np.ndarray) -> np.ndarray:
    """Most frequent training tag of each test word's form; unseen forms get the majority tag.

    Forms are integer ids (equal ids = equal token-id tuples). Ties between tags of a form go
    to the smaller tag code, so the result is deterministic.
    """
    fallback = majority_tag(train_tags)
    pairs, counts = np.unique(np.stack([train_forms, train_tags]), axis=1, return_counts=True)
    # Sort by form, then count descending, then tag ascending: the first row of each form wins.
    order = np.lexsort((pairs[1], -counts, pairs[0]))
    pairs = pairs[:, order]
    first = np.ones(pairs.shape[1], dtype=bool)
    first[1:] = pairs[0, 1:] != pairs[0, :-1]
    forms, best = pairs[0, first], pairs[1, first]
    at = np.clip(np.searchsorted(forms, test_forms), 0, len(forms) - 1)
    seen = forms[at] == test_forms
    return np.where(seen, best[at], fallback)


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float


def score(true: np.ndarray, pred: np.ndarray) -> Scores:
    from sklearn.metrics import f1_score

    return Scores(
        float(np.mean(true == pred)),
        float(f1_score(true, pred, average="macro", zero_division=0)),
    )


def mlp(hidden: int, max_epochs: int, seed: int):
    """The probe: one hidden layer, Adam, early stopping on a 10% slice of the training tokens."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=(hidden,),
        max_iter=max_epochs,
        early_stopping=True,
        n_iter_no_change=3,
        random_state=seed,
    )


def linear_probe(seed: int, warm_start: bool = False):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=100, tol=1e-3, random_state=seed, warm_start=warm_start)


def _fit_score(model, X_train, y_train, X_test, y_test) -> Scores:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    if len(np.unique(y_train)) < 2:
        # A one-class training set: every classifier predicts that class.
        return score(y_test, np.full(len(y_test), y_train[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped epochs are a budget choice
        model.fit(X_train, y_train)
    return score(y_test, model.predict(X_test))


SCORES = (
    "accuracy",
    "macro_f1",
    "baseline_majority",
    "baseline_word",
    "shuffled",
    "baseline_majority_f1",
    "baseline_word_f1",
    "shuffled_f1",
)


def run_probe(
    experts: np.ndarray,
    tags: np.ndarray,
    forms: np.ndarray,
    doc_id: np.ndarray,
    num_experts: int,
    *,
    features: PathFeatures | str = PathFeatures.TOPK,
    hidden: int = 128,
    max_epochs: int = 40,
    test_size: float = 0.2,
    seed: int = 0,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """MLP on routing paths vs the majority, word-form and shuffled-path baselines, over splits.

    `experts` (n, L, k), `tags` (n,), `forms` (n,) word-form ids, `doc_id` (n,) the split groups
    (sentence texts). `splits` (or one `split`; default: one split by `doc_id`) are (train, test)
    row indices. Returns the `pos.probe` dict: accuracy, macro_f1, baseline_majority,
    baseline_word, shuffled (test accuracies) and their macro-F1s, each the mean over the splits
    with `<key>_sd` its standard deviation between splits (null for one split), `per_split`, and
    the first split's sizes.
    """
    if splits is None:
        splits = [split if split is not None else split_by_document(doc_id, test_size=test_size, seed=seed)]
    X = path_features(experts, num_experts, features)
    runs_ = [
        _probe_split(X, tags, forms, train, test, hidden, max_epochs, seed + i)
        for i, (train, test) in enumerate(splits)
    ]
    out: dict = {}
    for key in SCORES:
        values = np.array([r[key] for r in runs_])
        out[key] = float(values.mean())
        out[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    train, test = splits[0]
    out |= {
        "splits": len(splits),
        "per_split": {key: [r[key] for r in runs_] for key in SCORES},
        "train_tokens": len(train),
        "test_tokens": len(test),
        "test_documents": len(np.unique(doc_id[test])),
        "features": str(PathFeatures(features)),
        "classifier": f"MLPClassifier(hidden={hidden}, max_epochs={max_epochs}, early stopping)",
    }
    return out


def _probe_split(X, tags, forms, train, test, hidden: int, max_epochs: int, seed: int) -> dict:
    y_train, y_test = tags[train], tags[test]
    probe = _fit_score(mlp(hidden, max_epochs, seed), X[train], y_train, X[test], y_test)
    majority = score(y_test, np.full(len(test), majority_tag(y_train)))
    word = score(y_test, word_form_predict(forms[train], y_train, forms[test]))
    rng = np.random.default_rng(seed + 1)
    # Control: the same MLP, paths shuffled across tokens (within train and within test).
    shuffled = _fit_score(
        mlp(hidden, max_epochs, seed), X[rng.permutation(train)], y_train, X[rng.permutation(test)], y_test
    )
    return {
        "accuracy": probe.accuracy,
        "macro_f1": probe.macro_f1,
        "baseline_majority": majority.accuracy,
        "baseline_word": word.accuracy,
        "shuffled": shuffled.accuracy,
        "baseline_majority_f1": majority.macro_f1,
        "baseline_word_f1": word.macro_f1,
        "shuffled_f1": shuffled.macro_f1,
    }


def layer_ablation(
    experts: np.ndarray,
    tags: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    num_experts: int,
    layers: list[int],
    *,
    features: PathFeatures | str = PathFeatures.TOPK,
    max_train_rows: int | None = 10_000,
    seed: int = 0,
    progress=None,
    classifier: AblationClassifier | str = AblationClassifier.MLP,
    hidden: int = 128,
    max_epochs: int = 40,
) -> dict:
    """Probe accuracy from each single layer, from the first i layers, without each layer.

    Keys are strings (JSON-ready): `single` {layer: acc}, `prefix` {i: acc} for i = 1..L,
    `drop` {layer: acc} (when L > 1), `full` (all layers), plus `best_single` (the layer that
    alone predicts best) and `most_needed` (the layer whose removal costs most).

    `classifier` "mlp" (default) refits the probe's MLP (`hidden`, `max_epochs`) from scratch on
    every subset; "linear" fits a logistic regression. To fit its 3L probes in the time budget,
    training uses at most `max_train_rows` random training rows (the test sentences are all
    kept). The linear prefix and drop probes start from a neighbouring solution (the previous
    prefix; the full probe): that objective is strictly convex, so the warm start changes the
    time, not the answer (the MLP's is not, so it is never warm-started). `progress` is an
    optional callable invoked once per fit.
    """
    classifier = AblationClassifier(classifier)
    train, test = split
    if max_train_rows is not None and len(train) > max_train_rows:
        train = np.sort(np.random.default_rng(seed).choice(train, size=max_train_rows, replace=False))
    y_train, y_test = tags[train], tags[test]
    L = experts.shape[1]
    assert L == len(layers), (L, layers)

    def fit(subset: list[int], model) -> float:
        X = path_features(experts, num_experts, features, keep_layers=subset)
        out = _fit_score(model, X[train], y_train, X[test], y_test).accuracy
        if progress is not None:
            progress()
        return out

    if classifier is AblationClassifier.MLP:
        return _mlp_ablation(
            fit,
            layers,
            len(train),
            lambda: mlp(hidden, max_epochs, seed),
            progress,
            f"MLPClassifier(hidden={hidden}, max_epochs={max_epochs}, early stopping), as the probe",
        )
    from sklearn.base import clone

    single = {str(layers[i]): fit([i], linear_probe(seed)) for i in range(L)}
    chain = linear_probe(seed, warm_start=True)
    prefix = {"1": single[str(layers[0])]}
    fit([0], chain)  # the chain's starting point (counted as the first prefix fit)
    for i in range(2, L + 1):
        prefix[str(i)] = fit(list(range(i)), chain)
    full = prefix[str(L)]
    drop = {}
    if L > 1 and hasattr(chain, "coef_"):
        start = (chain.coef_.copy(), chain.intercept_.copy())
        for i in range(L):
            model = clone(chain)
            model.coef_, model.intercept_ = start[0].copy(), start[1].copy()
            drop[str(layers[i])] = fit([j for j in range(L) if j != i], model)
    elif L > 1:  # one-class training set: nothing was fitted, every probe predicts that class
        drop = {str(layers[i]): full for i in range(L)}
    return _ablation_result(
        single, prefix, drop, full, len(train), "LogisticRegression(max_iter=100, tol=1e-3), warm-started"
    )


def _mlp_ablation(fit, layers: list[int], train_rows: int, model, progress, name: str) -> dict:
    """The ablation's probes, each a fresh MLP (`model()`), cold-started."""
    L = len(layers)
    single = {str(layers[i]): fit([i], model()) for i in range(L)}
    prefix = {"1": single[str(layers[0])]}  # the first prefix is the first single layer: not refitted
    if progress is not None:
        progress()  # the step the linear path spends on its chain's starting point
    for i in range(2, L + 1):
        prefix[str(i)] = fit(list(range(i)), model())
    drop = {str(layers[i]): fit([j for j in range(L) if j != i], model()) for i in range(L)} if L > 1 else {}
    return _ablation_result(single, prefix, drop, prefix[str(L)], train_rows, name)


def _ablation_result(single: dict, prefix: dict, drop: dict, full: float, train_rows: int, classifier: str) -> dict:
    result = {
        "single": single,
        "prefix": prefix,
        "drop": drop,
        "full": full,
        "best_single": max(single, key=single.get),
        "train_rows": train_rows,
        "classifier": classifier,
    }
    if drop:
        result["most_needed"] = min(drop, key=drop.get)
    return result


def ablation_fits(num_layers: int) -> int:
    """How many probes `layer_ablation` fits (for progress bars)."""
    return 2 * num_layers + (num_layers if num_layers > 1 else 0)

"""Part-of-speech sensitivity of routers: `analyze_pos(trace)` -> the `pos` section of the analysis.

Do routers send tokens of one part of speech to the same experts, and do routing paths (a
token's experts across all MoE layers) encode syntax? Given a trace with gold or tagger UPOS
(`word_index` and `upos` columns), this module picks one row per word (or every row, see
`WordPolicy`) and runs, on the same rows:

- specialization per layer and tag, with a within-document permutation test corrected for the
  layers x tags tests and a bootstrap interval over documents (`pos_specialization`),
- the routing-path probe against its baselines, and the layer ablation (`pos_probe`),
- the t-SNE path map with per-tag silhouettes (`pos_map`).

The report draws its figures from the returned dict (`routelens.report.figures.pos`); nothing here
needs matplotlib.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from routelens.analysis.pos_probe import (
    AblationClassifier,
    PathFeatures,
    ablation_fits,
    group_splits,
    layer_ablation,
    run_probe,
)
from routelens.analysis.pos_specialization import Correction
from routelens.config import build_config, choice, setting
from routelens.corpus.upos import UPOS_TAGS
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace


class WordPolicy(StrEnum):
    FIRST = "first"  # the word's first model token (default: see docs/pos.md)
    LAST = "last"  # its last model token
    EVERY = "every"  # every token of the word, each labelled with the word's tag


@dataclass
class PosConfig:
    policy: WordPolicy = setting(WordPolicy.FIRST, "Which token(s) of a multi-token word stand for it.")
    features: PathFeatures = setting(PathFeatures.TOPK, "Probe input: top-k set or first choice per layer.")
    permutations: int = setting(
        500, "Within-document tag shuffles of the specialization test (the null's mean and variance)."
    )
    correction: Correction = setting(
        Correction.FDR_BH, "Multiple-testing correction over layers x tags: fdr_bh (Benjamini-Hochberg), holm, none."
    )
    alpha: float = setting(0.05, "A (layer, tag) is significant when its corrected p-value is at most this.")
    min_words: int = setting(30, "Words a tag needs before any specialization claim is made (tested at all).")
    bootstrap: int = setting(200, "Bootstrap replicates over documents for the max_share interval (0: none).")
    hidden: int = 128  # width of the probe MLP's hidden layer
    max_epochs: int = 40  # cap on the MLP's epochs (early stopping usually ends sooner)
    test_size: float = 0.2  # share of sentences (documents) held out for testing the probes
    tsne_points: int = 1000  # tokens in the t-SNE path map
    splits: int = setting(5, "Random train/test splits by sentence text; the probe's scores are their mean and sd.")
    ablation: bool = True  # run the layer ablation (3L probes with the probe's classifier)
    ablation_rows: int = 10_000  # training rows of each ablation probe (a random subset)
    ablation_classifier: AblationClassifier = AblationClassifier.MLP  # the probe's own (mlp), or linear
    seed: int = setting(0, "Seed of the permutations, the bootstrap, the splits and the probes.")

    def __post_init__(self):
        self.policy = choice(WordPolicy, self.policy, "word policy")
        self.features = choice(PathFeatures, self.features, "path features")
        self.ablation_classifier = choice(AblationClassifier, self.ablation_classifier, "ablation classifier")
        self.correction = choice(Correction, self.correction, "correction")
        if self.splits < 1:
            raise RoutelensError(f"splits={self.splits} must be at least 1; use e.g. 5.")
        if self.permutations < 1:
            raise RoutelensError(f"permutations={self.permutations} must be at least 1; use e.g. 500.")
        if not 0.0 < self.alpha < 1.0:
            raise RoutelensError(f"alpha={self.alpha} must lie strictly between 0 and 1; use e.g. 0.05.")
        if self.min_words < 1 or self.bootstrap < 0:
            raise RoutelensError(f"min_words={self.min_words} must be >= 1 and bootstrap={self.bootstrap} >= 0.")
        if not 0.0 < self.test_size < 1.0:
            raise RoutelensError(f"test_size={self.test_size} must lie strictly between 0 and 1; use e.g. 0.2.")
        if self.hidden < 1 or self.max_epochs < 1:
            raise RoutelensError(f"hidden={self.hidden} and max_epochs={self.max_epochs} must be positive.")
        if self.ablation_rows < 100:
            raise RoutelensError(f"ablation_rows={self.ablation_rows} is too few to train a probe; use e.g. 10000.")
        if self.tsne_points < 0:
            raise RoutelensError(f"tsne_points={self.tsne_points} must be >= 0 (0 skips the path map).")


@dataclass
class WordRows:
    """The rows that the POS analyses use, one per word (or per token with policy `every`)."""

    experts: np.ndarray  # (n, L, k)
    tags: np.ndarray  # (n,) int codes into UPOS_TAGS
    doc_id: np.ndarray  # (n,) int64, the sentence/document (the permutation test's groups)
    form: np.ndarray  # (n,) int64 word-form id: equal ids <=> equal tuples of token ids
    word: np.ndarray  # (n,) int64 running word number (rows of one word share it)
    num_words: int
    sentence: np.ndarray | None = None  # (n,) int64 sentence-text id (probe split groups); None: doc_id

    def groups(self) -> np.ndarray:
        """The probe's split groups: equal sentence texts together (duplicates on one side)."""
        return self.doc_id if self.sentence is None else self.sentence


def sentence_ids(doc_id: np.ndarray, token_id: np.ndarray) -> np.ndarray:
    """(n,) id of each row's document *text*: documents with the same token-id sequence share an
    id (an exactly duplicated sentence). Rows are grouped by document, in trace order."""
    starts = np.flatnonzero(np.r_[True, doc_id[1:] != doc_id[:-1]])
    ends = np.r_[starts[1:], len(doc_id)]
    seen: dict[bytes, int] = {}
    per_doc = np.array(
        [seen.setdefault(token_id[a:b].astype(np.int64).tobytes(), len(seen)) for a, b in zip(starts, ends)],
        dtype=np.int64,
    )
    return np.repeat(per_doc, ends - starts)


def select_word_rows(
    doc_id: np.ndarray,
    word_index: np.ndarray,
    upos: np.ndarray,
    token_id: np.ndarray,
    policy: WordPolicy | str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, word, form) for tagged rows in trace order.

    A word is a run of consecutive rows with the same (doc_id, word_index) and a tag
    (word_index >= 0, upos >= 0). `rows` indexes the input, `word` numbers each selected row's
    word, `form` is a word-form id per selected row computed from the word's full token-id tuple.
    """
    policy = WordPolicy(policy)
    tagged = np.flatnonzero((word_index >= 0) & (upos >= 0))
    if len(tagged) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    d, w = doc_id[tagged], word_index[tagged]
    starts_mask = np.ones(len(tagged), dtype=bool)
    starts_mask[1:] = (d[1:] != d[:-1]) | (w[1:] != w[:-1]) | (tagged[1:] != tagged[:-1] + 1)
    word_of_row = np.cumsum(starts_mask) - 1  # (tagged,)
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], len(tagged)) - 1
    forms = _word_forms(token_id[tagged], starts, ends)  # (words,)
    if policy is WordPolicy.FIRST:
        return tagged[starts], np.arange(len(starts)), forms
    if policy is WordPolicy.LAST:
        return tagged[ends], np.arange(len(starts)), forms
    return tagged, word_of_row, forms[word_of_row]


def _word_forms(tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Integer id per word of its token-id tuple, exact: words are grouped by length, and each
    length's (words, length) matrix of token ids is deduplicated with `np.unique(axis=0)`."""
    lengths = ends - starts + 1
    forms = np.empty(len(starts), dtype=np.int64)
    next_id = 0
    for length in np.unique(lengths):
        which = np.flatnonzero(lengths == length)
        matrix = tokens[starts[which][:, None] + np.arange(length)[None, :]]  # (words, length)
        uniq, inverse = np.unique(matrix, axis=0, return_inverse=True)
        forms[which] = next_id + inverse.reshape(-1)
        next_id += len(uniq)
    return forms


def load_word_rows(
    trace: Trace,
    policy: WordPolicy | str = WordPolicy.FIRST,
    *,
    rows_per_chunk: int = 1 << 20,
) -> WordRows:
    """Stream the trace and keep its tagged rows, then select per word.

    Only tagged rows are kept (about L*k bytes each), and selection happens after the chunks
    are joined, so a word or sentence straddling two chunks is handled like any other.
    """
    if not (trace.has("word_index") and trace.has("upos")):
        raise RoutelensError(
            f"the trace at {trace.path} has no part-of-speech columns (word_index, upos); trace a .conllu "
            "corpus, or raw text with `routelens trace ... --tagger spacy`."
        )
    parts = []
    for chunk in trace.iter_chunks(columns=["word_index", "upos"], rows=rows_per_chunk):
        keep = (chunk.word_index >= 0) & (chunk.upos >= 0)
        parts.append(
            (
                chunk.doc_id[keep],
                chunk.word_index[keep],
                chunk.upos[keep],
                chunk.token_id[keep],
                chunk.experts[keep],
            )
        )
    if not parts or sum(len(p[0]) for p in parts) == 0:
        raise RoutelensError(
            f"the trace at {trace.path} has no tagged tokens; check that its corpus carries UPOS tags."
        )
    doc_id, word_index, upos, token_id, experts = (np.concatenate(cols) for cols in zip(*parts, strict=True))
    rows, word, form = select_word_rows(doc_id, word_index, upos, token_id, policy)
    num_words = int(word[-1]) + 1 if len(word) else 0
    sentence = sentence_ids(doc_id, token_id)  # from the tagged rows' tokens: the words' text
    return WordRows(experts[rows], upos[rows], doc_id[rows], form, word, num_words, sentence[rows])


def analyze_pos(
    trace: Trace | str | Path, config: PosConfig | None = None, *, progress: bool = True, **overrides
) -> dict:
    """The whole POS analysis of a trace; keyword overrides set `PosConfig` fields.

    Returns the `pos` dict: specialization {layer: {tag: {expert, max_share, kl, p_value,
    p_adjusted, significant, n, ...}}} (docs/pos.md lists every key),
    shares {layer: {tag: [share per expert]}}, probe {...}, ablation {single, prefix, drop},
    tsne {...}, counts {tag: rows}, and the settings used. Layer keys are the trace's true
    layer indices written as strings.
    """
    config = build_config(PosConfig, config, overrides)
    if not isinstance(trace, Trace):
        trace = open_trace(trace)
    words = load_word_rows(trace, config.policy)
    return analyze_word_rows(
        words,
        trace.layers,
        trace.num_ids,
        trace.top_k,
        config,
        num_zero_experts=trace.num_zero_experts,
        progress=progress,
    )


def analyze_word_rows(
    words: WordRows,
    layers: list[int],
    num_ids: int,
    top_k: int,
    config: PosConfig,
    *,
    num_zero_experts: int = 0,
    progress: bool = True,
) -> dict:
    """`analyze_pos` on rows already selected (tests and benchmarks build them directly). Ids
    range over `num_ids` = E + Z (docs/glossary.md); every per-expert array is that wide."""
    from routelens.analysis.pos_map import path_map
    from routelens.analysis.pos_specialization import (
        permutation_test,
        shares_from_counts,
        tag_expert_counts,
    )
    from routelens.progress import progress_bar

    T = len(UPOS_TAGS)
    L = len(layers)
    assert words.experts.shape[1:] == (L, top_k), (words.experts.shape, L, top_k)
    present = np.flatnonzero(np.bincount(words.tags, minlength=T))
    tag_totals = np.bincount(words.tags, minlength=T)
    result: dict = {
        "policy": str(config.policy),
        "features": str(config.features),
        "num_words": words.num_words,
        "num_rows": len(words.tags),
        "num_documents": len(np.unique(words.doc_id)),
        "chance_share": top_k / num_ids,
        "layers": [int(x) for x in layers],
        "num_experts": int(num_ids - num_zero_experts),  # routed experts E
        "num_ids": int(num_ids),
        "top_k": int(top_k),
        "permutations": config.permutations,
        "counts": {UPOS_TAGS[t]: int(tag_totals[t]) for t in present},
        "config": {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(config).items()},
    }
    steps = 2 + (ablation_fits(L) if config.ablation else 0) + (1 if config.tsne_points else 0)
    with progress_bar(disable=not progress, transient=True) as bar:
        task = bar.add_task("POS analysis", total=steps, status="specialization")

        def advance(status: str = "") -> None:
            bar.update(task, advance=1, status=status)

        counts = tag_expert_counts(words.experts, words.tags, T, num_ids)  # (L, T, E)
        shares = shares_from_counts(counts, tag_totals)  # (L, T, E)
        test = permutation_test(
            words.experts,
            words.tags,
            T,
            num_ids,
            groups=words.doc_id,
            permutations=config.permutations,
            seed=config.seed,
        )
        result["specialization"], result["shares"] = _specialization_tables(
            words, layers, present, shares, test, tag_totals, config
        )
        result["tests"] = _test_summary(result["specialization"], config)
        advance("probe")
        splits = group_splits(words.groups(), test_size=config.test_size, seed=config.seed, splits=config.splits)
        result["probe"] = run_probe(
            words.experts,
            words.tags,
            words.form,
            words.groups(),
            num_ids,
            features=config.features,
            hidden=config.hidden,
            max_epochs=config.max_epochs,
            seed=config.seed,
            splits=splits,
        )
        result["probe"]["tags"] = [UPOS_TAGS[t] for t in present]
        result["probe"]["duplicate_rows"] = int(len(words.tags) - _rows_in_unique_sentences(words))
        advance("ablation" if config.ablation else "path map")
        if config.ablation:
            result["ablation"] = layer_ablation(
                words.experts,
                words.tags,
                splits[0],
                num_ids,
                layers,
                features=config.features,
                max_train_rows=config.ablation_rows,
                seed=config.seed,
                progress=lambda: advance("ablation"),
                classifier=config.ablation_classifier,
                hidden=config.hidden,
                max_epochs=config.max_epochs,
            )
        if config.tsne_points:
            result["tsne"] = path_map(
                words.experts,
                words.tags,
                num_ids,
                UPOS_TAGS,
                features=config.features,
                points=config.tsne_points,
                seed=config.seed,
            )
            advance("done")
    return result


def _specialization_tables(words, layers, present, shares, test, tag_totals, config: PosConfig) -> tuple[dict, dict]:
    """Per (layer, tag): best expert and share with its bootstrap interval, KL, p-values and the
    corrected decision. Tags with fewer than `min_words` rows are not tested (no p_adjusted)."""
    from routelens.analysis.pos_specialization import adjust_pvalues, share_intervals

    tested = tag_totals >= config.min_words  # (T,)
    p = np.where(tested[None, :], test.p_value, np.nan)  # (L, T): the family of tests
    adjusted = adjust_pvalues(p, config.correction)
    best = np.argmax(np.nan_to_num(shares, nan=-1.0), axis=-1)  # (L, T); absent tags: 0, unused
    low, high = share_intervals(
        words.experts, words.tags, words.doc_id, best, len(UPOS_TAGS), replicates=config.bootstrap, seed=config.seed
    )
    spec: dict = {}
    table: dict = {}
    opt = lambda x: None if not np.isfinite(x) else float(x)  # noqa: E731
    for li, layer in enumerate(layers):
        spec[str(layer)] = {}
        table[str(layer)] = {}
        for t in present:
            row = shares[li, t]  # (E,)
            e = int(best[li, t])
            spec[str(layer)][UPOS_TAGS[t]] = {
                "expert": e,
                "max_share": float(row[e]),
                "max_share_low": opt(low[li, t]),
                "max_share_high": opt(high[li, t]),
                "kl": float(test.observed[li, t]),
                "kl_null_mean": float(test.null_mean[li, t]),
                "kl_null_sd": float(test.null_sd[li, t]),
                "p_value": float(test.p_value[li, t]),
                "p_permutation": float(test.p_permutation[li, t]),
                "p_adjusted": opt(adjusted[li, t]),
                "significant": bool(tested[t] and adjusted[li, t] <= config.alpha),
                "tested": bool(tested[t]),
                "n": int(tag_totals[t]),
            }
            table[str(layer)][UPOS_TAGS[t]] = [round(float(x), 5) for x in row]
    return spec, table


def _rows_in_unique_sentences(words: WordRows) -> int:
    """Rows whose sentence text occurs in one document only (the rest sit in duplicated sentences)."""
    groups = words.groups()
    docs_per_text = {}
    for g, _d in set(zip(groups.tolist(), words.doc_id.tolist())):
        docs_per_text[g] = docs_per_text.get(g, 0) + 1
    return int(sum(docs_per_text[g] == 1 for g in groups.tolist()))


def _test_summary(spec: dict, config: PosConfig) -> dict:
    """How many (layer, tag) tests were made and how many came out significant after correction."""
    entries = [e for tags in spec.values() for e in tags.values()]
    return {
        "family": sum(e["tested"] for e in entries),
        "significant": sum(e["significant"] for e in entries),
        "correction": str(config.correction),
        "alpha": config.alpha,
        "min_words": config.min_words,
        "p_value": "scaled chi-square matched to the within-document permutation null's mean and variance",
    }


def top_specialized(result: dict, n: int = 10) -> list[tuple[str, str, dict]]:
    """The (layer, tag, entry) triples with the largest max_share, for summaries and the CLI."""
    rows = [(layer, tag, entry) for layer, tags in result["specialization"].items() for tag, entry in tags.items()]
    return sorted(rows, key=lambda r: (-r[2]["max_share"], r[2]["p_value"]))[:n]

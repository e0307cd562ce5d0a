"""`analyze(trace)`: every routing analysis of the Mixtral paper (and OLMoE's extensions) in one
streaming pass over the trace, returned as one JSON-ready dict (schema: docs/analysis-json.md).

Each analysis is an accumulator fed chunk by chunk, so memory is bounded by the chunk size plus
state that does not grow with the number of tokens (per-domain resampling units capped at
`distribution.UNIT_BUDGET`, counts bounded by vocabulary, layers and experts, the open document
of the permutation baseline); the dict is assembled at the end. `write_json` saves it
atomically. `benchmarks/bench_scale.py` checks that peak memory stays flat when a trace doubles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from routelens.analysis.coactivation import CoactivationAccumulator
from routelens.analysis.confidence import ConfidenceAccumulator
from routelens.analysis.distribution import (
    DistributionAccumulator,
    domain_distance,
    normalise,
)
from routelens.analysis.locality import (
    PairCounter,
    PermutedCounter,
    UnitPairCounts,
    locality_intervals,
    random_baseline,
)
from routelens.analysis.lookahead import LookaheadAccumulator
from routelens.analysis.pairs import layer_major, mask_dtype, pair_valid
from routelens.analysis.permutation_null import PermutationNull
from routelens.analysis.row_kernels import token_rows_of
from routelens.analysis.vocabulary import (
    TokenExpertCounter,
    add_rows_together,
    specialization,
    typical_tokens,
)
from routelens.atomic import write_json as write_json_atomic
from routelens.config import build_config, setting, split_overrides
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace

ALL = "all"  # key of the pooled domains


class LocalityNull(StrEnum):
    EXACT = "exact"  # the within-document permutation null in closed form (permutation_null.py)
    SHUFFLED = "shuffled"  # the reference: the mean and spread of `locality_permutations` shuffles


@dataclass
class AnalyzeConfig:
    pos: bool = setting(False, "Also run the part-of-speech analyses (needs a trace with UPOS).")
    min_count: int = setting(10, "Occurrences a token id needs to count in vocabulary specialization.")
    max_distance: int = setting(64, "Locality is also measured at distances 1..N.")
    bootstrap: int = setting(200, "Bootstrap replicates over documents for domain distances (0: none).")
    seed: int = setting(0, "Seed of the permutation baseline and the bootstrap.")
    locality_null: LocalityNull = setting(
        LocalityNull.EXACT, "The locality control: exact (closed form) or shuffled (locality_permutations shuffles)."
    )
    locality_permutations: int = setting(
        20, "Within-document shuffles behind the locality control (their mean and spread) when locality_null=shuffled."
    )
    keep_straddling: bool = setting(
        False,
        "Keep consecutive pairs that straddle a trace window boundary (the second token was routed without the first in context).",
    )
    distance_tokens: int = 1 << 20  # anchors of the distance curve: about this many rows (stride)
    # rows per chunk analysed at once (fewer chunks: less overhead; memory grows with it, and with
    # the next chunk read ahead meanwhile: 10M tokens x 32 layers x top-2 of 8 peak at 912 MiB
    # with 1 << 17 rows, 1018 MiB with 1 << 18, 1251 MiB with 1 << 19, in about the same time)
    rows: int = 1 << 17
    progress: bool = True

    def __post_init__(self):
        checks = {
            "min_count": 1,
            "max_distance": 1,
            "bootstrap": 0,
            "distance_tokens": 1,
            "rows": 1,
            "locality_permutations": 1,
        }
        try:
            self.locality_null = LocalityNull(self.locality_null)
        except ValueError:
            raise RoutelensError(
                f"locality_null={self.locality_null!r} is invalid; pass one of {', '.join(LocalityNull)}."
            ) from None
        for name, low in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise RoutelensError(f"{name}={value!r} is invalid; pass an integer >= {low}.")


def analyze(trace: Trace | str | Path, config: AnalyzeConfig | None = None, *, pos_config=None, **overrides) -> dict:
    """All routing analyses of `trace` as one JSON-ready dict (see docs/analysis-json.md);
    keyword overrides set AnalyzeConfig fields, e.g. `analyze(trace, bootstrap=0, progress=False)`,
    or, with pos=True, `routelens.analysis.pos.PosConfig` fields (`correction="holm"`); a shared
    `seed` goes to both. `pos_config` is a whole PosConfig instead."""
    from routelens.analysis.pos import PosConfig

    analyze_overrides, pos_overrides = split_overrides(overrides, AnalyzeConfig, PosConfig, what="AnalyzeConfig")
    config = build_config(AnalyzeConfig, config, analyze_overrides)
    pos_overrides.setdefault("seed", config.seed)
    progress = config.progress
    tr = trace if isinstance(trace, Trace) else open_trace(trace)
    if ALL in tr.domains:
        raise RoutelensError(
            f"the trace at {tr.path} has a domain named {ALL!r}, which the analysis uses for the pooled domains; rename that corpus."
        )
    total = tr.num_tokens
    if total == 0:
        raise RoutelensError(f"the trace at {tr.path} holds no tokens; trace a non-empty corpus.")
    result = _stream(tr, config, total, progress)
    if config.pos:
        from routelens.analysis.pos import analyze_pos

        result["pos"] = analyze_pos(tr, build_config(PosConfig, pos_config, pos_overrides), progress=progress)
    return result


def _stream(tr: Trace, cfg: AnalyzeConfig, total: int, progress: bool) -> dict:
    from routelens.progress import progress_bar

    D, L, E, k = len(tr.domains), len(tr.layers), tr.num_ids, tr.top_k  # E: the id range
    stride = max(1, math.ceil(total / cfg.distance_tokens))
    vocab_size = len(tr.vocab) or int((tr.manifest.get("tokenizer") or {}).get("vocab_size") or 1)
    has_weights, has_probs = tr.has("weights"), tr.has("probs")
    dist = DistributionAccumulator(D, L, E, k)
    window = 0 if cfg.keep_straddling else window_length(tr)
    words = mask_dtype(E)[1]  # bitmask words per layer
    # d = 1 counts per resampling unit of `dist` (documents, or units of them) for the bootstrap.
    exact = cfg.locality_null == LocalityNull.EXACT
    real_units = UnitPairCounts(D * dist.U, L)
    perm_units = UnitPairCounts(D * dist.U, L, dtype=np.float64 if exact else np.int64)
    local = PairCounter(D, L, window=window, units=real_units)
    curve = PairCounter(D, L, max_distance=cfg.max_distance, stride=stride, window=window)
    permuted = (
        PermutationNull(D, L, E, units=perm_units)
        if exact
        else PermutedCounter(D, L, seed=cfg.seed, permutations=cfg.locality_permutations, units=perm_units)
    )
    vocab_in = TokenExpertCounter(L, E, vocab_size)
    vocab_next = TokenExpertCounter(L, E, vocab_size)
    # The chance line of vocabulary specialization: the same counts with each chunk's token ids
    # shuffled among its rows, which keeps every token's count and the layer's expert load and
    # routes each occurrence independently of the token's identity.
    vocab_null = TokenExpertCounter(L, E, vocab_size)
    null_rng = np.random.default_rng([cfg.seed, 1])
    coact = CoactivationAccumulator(L, E)
    conf = ConfidenceAccumulator(L, E, weights=has_weights, probs=has_probs)
    columns = [c for c, present in (("weights", has_weights), ("probs", has_probs)) if present]
    ahead = None  # `trace --lookahead D`: how well the next layers' experts are known early
    if tr.has("lookahead"):
        columns.append("lookahead")
    last = None  # (doc, pos, experts) of the previous chunk's last row, for next-token pairs
    with progress_bar(not progress) as bar:
        task = bar.add_task("analyze", total=total, status="")
        for chunk in read_ahead(tr.iter_chunks(columns=columns, rows=cfg.rows)):
            experts, dom, doc, pos = chunk.experts, chunk.domain, chunk.doc_id, chunk.position  # (n, L, k), (n,) ...
            # Every counter reads the reader's (n, L, k) ids or the token-major rows built from them
            # once (first ids (n, L), top-k bitmasks (n, L * W)): compiled kernels, layers in parallel.
            first, mask = token_rows_of(experts, E)
            dist.update(experts, dom, doc)
            local.update_rows(first, mask, words, doc, pos, dom, dist.row_unit)
            curve.update_rows(first, mask, words, doc, pos, dom)
            if exact:
                permuted.update_rows(first, mask, doc, dom, dist.row_unit)
            else:
                permuted.update(*layer_major(experts, E), doc, dom, dist.row_unit)
            del first, mask
            # Next-token pairs: the experts of token i count for the id of token i + 1 (-1: no pair).
            next_id = np.full(len(chunk), -1, dtype=np.int64)
            valid = pair_valid(doc[:-1], pos[:-1], doc[1:], pos[1:], 1)
            next_id[:-1] = np.where(valid, chunk.token_id[1:], -1)
            null_id = chunk.token_id[null_rng.permutation(len(chunk))]
            add_rows_together([vocab_in, vocab_null, vocab_next], [chunk.token_id, null_id, next_id], experts)
            if last is not None and pair_valid(last[0], last[1], doc[:1], pos[:1], 1)[0]:
                vocab_next.update(chunk.token_id[:1], last[2])
            last = (doc[-1:], pos[-1:], experts[-1:].copy())
            coact.update(experts)
            conf.update(chunk.weights, chunk.probs)
            if chunk.lookahead is not None:
                ahead = ahead or LookaheadAccumulator(L, chunk.lookahead.shape[2], k)  # D from the column itself
                ahead.update(experts, chunk.lookahead, doc, pos)
            bar.advance(task, len(chunk))
    permuted.finish()
    intervals = locality_intervals(real_units, perm_units, dist.unit_domains(), replicates=cfg.bootstrap, seed=cfg.seed)
    result = _assemble(tr, cfg, stride, dist, local, curve, permuted, vocab_in, vocab_next, coact, conf)
    result["vocabulary_null"] = to_json_ready(dict(zip(map(str, tr.layers), specialization(vocab_null, cfg.min_count))))
    result["coactivation_adjacent"] = to_json_ready(
        {str(layer): m for layer, m in zip(tr.layers, coact.result(adjacent=True))}
    )
    result.update(_locality_extras(tr, local, permuted, intervals))
    if ahead is not None:
        result["lookahead"] = to_json_ready(ahead.result([str(layer) for layer in tr.layers]))
    result["meta"]["params"].update(
        locality_permutations=cfg.locality_permutations,
        locality_null=str(cfg.locality_null),
        window=window,
        keep_straddling=cfg.keep_straddling,
    )
    return result


def read_ahead(chunks: Iterable) -> Iterator:
    """The items of `chunks`, each next one read by a background thread while the caller works
    on the current one: Parquet decoding and the compiled kernels release the GIL, so on two
    cores reading hides behind the analysis. One chunk in flight (memory: one more chunk)."""
    it = iter(chunks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="routelens-read") as pool:
        pending = pool.submit(next, it, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, it, None)
            yield chunk


def window_length(tr: Trace) -> int:
    """Tokens per forward pass of the trace (the manifest's `seq_len`): the tracer cut longer
    documents at positions 0, seq_len, 2 seq_len, ... 0 when unknown (imported traces record no
    windows; `seq_len` 0 there), and then no pair is taken for straddling."""
    value = tr.manifest.get("seq_len")
    return int(value) if isinstance(value, int) and value > 0 else 0


def _locality_extras(tr: Trace, local, permuted, intervals) -> dict:
    """The uncertainty of locality: intervals over documents, the permutations' spread, real
    minus permuted with its interval, and the pairs left out at window boundaries."""
    names = [str(layer) for layer in tr.layers]
    domains = [*tr.domains, ALL]
    real_first, real_any, _ = local.shares()
    perm_first, perm_any, sd_first, sd_any = permuted.shares()
    straddling = local.straddling[:, 0]
    ci = lambda key, j, i: {"low": intervals[key][0][j, i], "high": intervals[key][1][j, i]}  # noqa: E731
    out = {
        "locality_ci": {
            d: {n: {"first": ci("first", j, i), "any": ci("any", j, i)} for i, n in enumerate(names)}
            for j, d in enumerate(domains)
        },
        "locality_permuted_sd": {
            d: {n: {"first": sd_first[j, i], "any": sd_any[j, i]} for i, n in enumerate(names)}
            for j, d in enumerate(domains)
        },
        "locality_excess": {
            d: {
                n: {
                    "first": real_first[j, i, 0] - perm_first[j, i],
                    "any": real_any[j, i, 0] - perm_any[j, i],
                    "first_ci": ci("first_excess", j, i),
                    "any_ci": ci("any_excess", j, i),
                }
                for i, n in enumerate(names)
            }
            for j, d in enumerate(domains)
        },
        "locality_straddling": {
            d: int(straddling[j]) if j < len(straddling) else int(straddling.sum()) for j, d in enumerate(domains)
        },
    }
    return to_json_ready(out)


def _assemble(tr, cfg, stride, dist, local, curve, permuted, vocab_in, vocab_next, coact, conf) -> dict:
    from routelens.version import VERSION

    E, k = tr.num_ids, tr.top_k  # counts span every id, zero-computation ones included
    names = [str(layer) for layer in tr.layers]
    domains = [*tr.domains, ALL]
    totals = dist.totals()  # (D, L, E)
    totals_all = np.concatenate([totals, totals.sum(0, keepdims=True)])  # (D + 1, L, E)
    by_choice = dist.by_choice()  # (D, L, C, E)
    by_slot = np.concatenate([by_choice, by_choice.sum(0, keepdims=True)])  # (D + 1, L, C, E)
    tokens = np.concatenate([dist.tokens, [dist.tokens.sum()]])  # (D + 1,)
    documents = dist.documents()
    documents = np.concatenate([documents, [documents.sum()]])

    def per_token(c, d):
        return (c / tokens[d]).tolist() if tokens[d] else None

    share = normalise(totals_all)  # (D + 1, L, E)
    loc_first, loc_any, loc_pairs = local.shares()
    perm_first, perm_any, _, _ = permuted.shares()  # (D + 1, L) means over the permutations
    cur_first, cur_any, _ = curve.shares()
    doc_counts, doc_domain = dist.doc_counts()
    distance = domain_distance(totals, doc_counts, doc_domain, replicates=cfg.bootstrap, seed=cfg.seed)
    coactivation = coact.result()
    tokens_table = typical_tokens(vocab_in, cfg.min_count)
    vocab = tr.vocab

    def layer_map(fn):
        return {name: fn(i) for i, name in enumerate(names)}

    def pairs_of(i: int) -> list[dict]:
        D = len(tr.domains)
        return [
            {
                "a": tr.domains[a],
                "b": tr.domains[b],
                "js": distance["js"][a, b, i],
                "ci_low": distance["low"][a, b, i],
                "ci_high": distance["high"][a, b, i],
                "js_distance": np.sqrt(distance["js"][a, b, i]),  # sqrt: a metric; percentile ends map by sqrt
                "distance_ci_low": np.sqrt(distance["low"][a, b, i]),
                "distance_ci_high": np.sqrt(distance["high"][a, b, i]),
                "basic_ci_low": distance["basic_low"][a, b, i],
                "basic_ci_high": distance["basic_high"][a, b, i],
            }
            for a in range(D)
            for b in range(a + 1, D)
        ]

    result = {
        "meta": {
            "num_experts": tr.num_experts,  # routed experts E
            "num_zero_experts": tr.num_zero_experts,  # Z: ids E..E+Z-1
            "num_ids": tr.num_ids,  # E + Z: the width of every per-expert array below
            "top_k": k,
            "layers": list(tr.layers),
            "domains": list(tr.domains),
            "tokens": int(tokens[-1]),
            "tokens_per_domain": {d: int(tokens[i]) for i, d in enumerate(domains)},
            "documents_per_domain": {d: int(documents[i]) for i, d in enumerate(domains)},
            "model": tr.manifest.get("model") or {},
            "family": tr.manifest.get("family"),
            "routing_rule": tr.manifest.get("routing_rule"),
            "trace": str(tr.path),
            "has_weights": tr.has("weights"),
            "has_probs": tr.has("probs"),
            "params": {
                "min_count": cfg.min_count,
                "max_distance": cfg.max_distance,
                "bootstrap": cfg.bootstrap,
                "seed": cfg.seed,
                "distance_stride": stride,
            },
            "routelens_version": VERSION,
        },
        "distribution": {d: layer_map(lambda i, j=j: share[j, i]) for j, d in enumerate(domains)},
        "distribution_choice": {
            d: layer_map(
                lambda i, j=j: {
                    "first": per_token(by_slot[j, i, 0], j),
                    "second": per_token(by_slot[j, i, 1], j) if k >= 2 else None,
                    "any_per_token": per_token(totals_all[j, i], j),
                }
            )
            for j, d in enumerate(domains)
        },
        "domain_distance": layer_map(lambda i: {"pairs": pairs_of(i), "matrix": distance["js"][:, :, i]}),
        "locality": {
            d: layer_map(lambda i, j=j: {"first": loc_first[j, i, 0], "any": loc_any[j, i, 0]})
            for j, d in enumerate(domains)
        },
        "locality_baseline": random_baseline(E, k),
        "locality_permuted": {
            d: layer_map(lambda i, j=j: {"first": perm_first[j, i], "any": perm_any[j, i]})
            for j, d in enumerate(domains)
        },
        "locality_pairs": {d: int(loc_pairs[j, 0]) for j, d in enumerate(domains)},
        "locality_distance": {
            d: layer_map(lambda i, j=j: {"first": cur_first[j, i], "any": cur_any[j, i]}) for j, d in enumerate(domains)
        },
        "vocabulary": dict(zip(names, specialization(vocab_in, cfg.min_count))),
        "vocabulary_next": dict(zip(names, specialization(vocab_next, cfg.min_count))),
        "vocabulary_tokens": layer_map(
            lambda i: {
                str(e): [
                    {"token_id": t, "token": vocab[t] if t < len(vocab) else "", "share": s, "count": c}
                    for t, s, c in tokens_table[i][e]
                ]
                for e in range(E)
            }
        ),
        "coactivation": layer_map(lambda i: coactivation[i]),
        "confidence": layer_map(conf.result) if (conf.top1_weight or conf.top1_prob) else {},
    }
    return to_json_ready(result)


def to_json_ready(value):
    """numpy arrays and scalars -> lists and Python numbers; NaN and infinities -> None."""
    if isinstance(value, dict):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(result: dict, path: str | Path) -> Path:
    """Write `result` to `path` atomically (temporary file in the same folder, then rename); a
    folder at `path`, or no folder to hold it, is refused in one line (`routelens.atomic.write_json`)."""
    return write_json_atomic(path, result, indent=1, what="--json", example="analysis.json")

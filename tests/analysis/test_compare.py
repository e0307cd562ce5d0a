"""compare_traces on planted pairs of traces whose differences are known token by token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from routelens import RoutelensError
from routelens.analysis.compare import compare_traces
from routelens.capture.agreement import MARGIN_EDGES, choice_overlap, margin_bins, router_margin
from routelens.store.schema import expert_id_type, nested_array, trace_schema
from routelens.store.writer import TraceWriter, new_manifest

E, K = 4, 2


def write_pair_trace(path: Path, experts, doc_lengths, domains_of_docs, *, probs=None, token_id=None, shards=1) -> Path:
    """A trace of the planted `experts` (tokens, layers, k) with a domain per document and optional probs."""
    experts = np.asarray(experts, np.uint8)
    T, L, k = experts.shape
    lengths = np.asarray(doc_lengths)
    names = list(dict.fromkeys(domains_of_docs))
    doc_id = np.repeat(np.arange(len(lengths)), lengths)
    position = (np.arange(T) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.int32)
    domain = np.repeat([names.index(d) for d in domains_of_docs], lengths).astype(np.int32)
    token_id = np.zeros(T, np.int32) if token_id is None else np.asarray(token_id, np.int32)
    writer = TraceWriter(path, {"planted": str(path)}, overwrite=True)
    ends = np.cumsum(lengths)
    cuts = [0] + [int(ends[i * len(lengths) // shards - 1]) for i in range(1, shards)] + [T]
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        cols = [
            pa.array(doc_id[lo:hi], pa.int64()),
            pa.DictionaryArray.from_arrays(pa.array(domain[lo:hi]), pa.array(names, pa.string())),
            pa.array(position[lo:hi]),
            pa.array(token_id[lo:hi]),
            nested_array(experts[lo:hi], expert_id_type(E)),
        ]
        if probs is not None:
            cols.append(nested_array(np.asarray(probs, np.float16)[lo:hi], pa.float16()))
        schema = trace_schema(L, E, k, store_probs=probs is not None, with_weights=False)
        writer.write_shard(i, pa.Table.from_arrays(cols, schema=schema), {"next_doc": int(doc_id[hi - 1]) + 1})
    manifest = new_manifest(
        model={"name_or_path": "planted"},
        family="planted",
        routing_rule="planted",
        moe_layers=list(range(L)),
        num_experts=E,
        top_k=k,
        corpora=[{"name": n, "source": "test"} for n in names],
        tokenizer={"name": None, "vocab_size": 1},
        seq_len=0,
    )
    manifest.update(complete=True, totals={"tokens": T, "documents": len(lengths)})
    writer.write_manifest(manifest)
    return path


# Five tokens, two layers, top-2 of 4; documents [3, 2] in domains x and y.
A = np.array(
    [
        [[0, 1], [2, 3]],
        [[1, 2], [0, 3]],
        [[3, 0], [1, 2]],
        [[2, 1], [3, 0]],
        [[0, 3], [2, 1]],
    ]
)
B = A.copy()
B[0, 0] = [1, 0]  # layer 0: order swapped (first differs, same set)
B[1, 0] = [1, 3]  # layer 0: second choice replaced (first equal, overlap 1)
B[3, 1] = [1, 2]  # layer 1: both replaced (overlap 0)
LENGTHS, DOMAINS = [3, 2], ["x", "y"]


def planted_probs(experts: np.ndarray, close: set[tuple[int, int]]) -> np.ndarray:
    """Router probabilities whose top-2 are `experts`: margin p_2 - p_3 of 0.005 at the (token, layer)
    pairs in `close`, 0.15 elsewhere."""
    probs = np.zeros((*experts.shape[:2], E), np.float32)
    for t in range(experts.shape[0]):
        for layer in range(experts.shape[1]):
            values = [0.4, 0.3, 0.295, 0.005] if (t, layer) in close else [0.5, 0.3, 0.15, 0.05]
            rest = [e for e in range(E) if e not in experts[t, layer]]
            for e, v in zip([*experts[t, layer], *rest], values):
                probs[t, layer, e] = v
    return probs


@pytest.fixture
def pair(tmp_path):
    probs = planted_probs(A, close={(1, 0), (3, 1)})
    a = write_pair_trace(tmp_path / "a", A, LENGTHS, DOMAINS, probs=probs, shards=2)
    b = write_pair_trace(tmp_path / "b", B, LENGTHS, DOMAINS)
    return a, b


@pytest.mark.parametrize("rows", [1 << 18, 2])
def test_planted_pair_gives_the_exact_agreement(pair, rows):
    result = compare_traces(*pair, rows=rows)
    ag = result["agreement"]
    assert ag["x"]["0"] == pytest.approx({"first": 2 / 3, "overlap": 5 / 6, "set_equal": 2 / 3})
    assert ag["x"]["1"] == pytest.approx({"first": 1.0, "overlap": 1.0, "set_equal": 1.0})
    assert ag["y"]["0"] == pytest.approx({"first": 1.0, "overlap": 1.0, "set_equal": 1.0})
    assert ag["y"]["1"] == pytest.approx({"first": 1 / 2, "overlap": 2 / 4, "set_equal": 1 / 2})
    assert ag["all"]["0"] == pytest.approx({"first": 4 / 5, "overlap": 9 / 10, "set_equal": 4 / 5})
    assert result["any_layer_differs"] == pytest.approx({"x": 1 / 3, "y": 1 / 2, "all": 2 / 5})
    assert result["meta"]["tokens"] == 5 and result["meta"]["unmatched"] == {"a": 0, "b": 0}


def test_flip_rate_by_router_margin(pair):
    margin = compare_traces(*pair)["by_margin"]
    assert margin["source"] == "probs" and margin["trace"] == "a" and margin["flip"] == "top-k set differs"
    close, wide = MARGIN_EDGES.index(0.003), MARGIN_EDGES.index(0.1)  # 0.005 and 0.15 fall in these bins
    assert margin["counts"][close] == 2 and margin["flips"][close] == 2 and margin["rate"][close] == 1.0
    assert margin["counts"][wide] == 8 and margin["flips"][wide] == 0  # token 0's swapped order is no set flip
    assert sum(margin["counts"]) == 10


def test_compare_is_symmetric_in_agreement(pair):
    ab, ba = compare_traces(*pair), compare_traces(*pair[::-1])
    assert ab["agreement"] == ba["agreement"] and ab["any_layer_differs"] == ba["any_layer_differs"]
    assert ba["by_margin"]["trace"] == "b"  # the margin still comes from the trace that stores probs


def test_missing_last_rows_are_unmatched_not_refused(tmp_path):
    a = write_pair_trace(tmp_path / "a", A, LENGTHS, DOMAINS)
    b = write_pair_trace(tmp_path / "b", np.delete(B, 2, axis=0), [2, 2], DOMAINS)  # document 0 lacks its last row
    result = compare_traces(a, b)
    assert result["meta"]["unmatched"] == {"a": 1, "b": 0} and result["meta"]["tokens"] == 4
    assert result["agreement"]["x"]["0"]["first"] == pytest.approx(1 / 2)


def test_traces_of_other_tokens_are_refused(tmp_path):
    a = write_pair_trace(tmp_path / "a", A, LENGTHS, DOMAINS)
    other_ids = write_pair_trace(tmp_path / "b", B, LENGTHS, DOMAINS, token_id=[0, 0, 0, 7, 0])
    with pytest.raises(RoutelensError, match=r"differ in token id at document 1, row 0"):
        compare_traces(a, other_ids)
    fewer_docs = write_pair_trace(tmp_path / "c", B[:3], [3], ["x"])
    with pytest.raises(RoutelensError, match=r"document 1 is only in"):
        compare_traces(a, fewer_docs)
    other_layers = write_pair_trace(tmp_path / "d", B[:, :1], LENGTHS, DOMAINS)
    with pytest.raises(RoutelensError, match=r"moe_layers \[0, 1\].*and \[0\]"):
        compare_traces(a, other_layers)


def test_counting_functions_on_small_arrays():
    a = np.array([[[0, 1]], [[2, 3]]])
    b = np.array([[[1, 0]], [[3, 1]]])
    np.testing.assert_array_equal(choice_overlap(a, b), [[2], [1]])
    probs = np.array([[[0.5, 0.3, 0.15, 0.05]]])
    assert router_margin(probs, 2)[0, 0] == pytest.approx(0.15)
    assert router_margin(probs, 1)[0, 0] == pytest.approx(0.2)
    counts, flips = margin_bins(np.array([0.0, 0.002, 1.0]), np.array([True, False, True]))
    assert counts.tolist() == [1, 1, 0, 0, 0, 0, 1] and flips.tolist() == [1, 0, 0, 0, 0, 0, 1]

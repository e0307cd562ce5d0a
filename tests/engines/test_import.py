"""Import of engine routing: what vLLM and SGLang would have returned for the tokens of a real trace
imports to the same experts, row for row; every malformed input is refused with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routelens import RoutelensError, open_trace
from routelens.engines import import_engine
from routelens.store.schema import FORMAT_VERSION
from tests.engines.conftest import documents, write_sglang_jsonl, write_vllm_jsonl


def expected_rows(trace_path, last_run: bool = True) -> dict:
    """The reference trace's rows, minus each document's last row when the engine never ran it."""
    docs = documents(trace_path)
    keep = [d["experts"] if last_run else d["experts"][:-1] for d in docs]
    return {
        "experts": np.concatenate(keep),
        "token_id": np.concatenate([np.asarray(d["tokens"][: len(e)]) for d, e in zip(docs, keep)]),
        "position": np.concatenate([np.arange(len(e)) for e in keep]),
        "phase": np.concatenate(
            [(np.arange(len(e)) >= max(1, len(d["tokens"]) // 2)).astype(int) for d, e in zip(docs, keep)]
        ),
        "domains": [d["domain"] for d in docs],
    }


def assert_same_rows(imported, want: dict) -> None:
    rows = imported.load(["phase"])
    np.testing.assert_array_equal(rows.experts, want["experts"])
    np.testing.assert_array_equal(rows.token_id, want["token_id"])
    np.testing.assert_array_equal(rows.position, want["position"])
    np.testing.assert_array_equal(rows.phase, want["phase"])
    assert rows.experts.shape[1:] == (len(imported.layers), imported.top_k)  # (tokens, layers, k)


@pytest.mark.parametrize("last_run", [True, False])
def test_vllm_jsonl_imports_the_trace_row_for_row(mixtral_trace, tiny_mixtral, tmp_path, last_run):
    src = write_vllm_jsonl(tmp_path / "vllm.jsonl", documents(mixtral_trace), last_run=last_run)
    imported = import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False, shard_tokens=16)
    want = expected_rows(mixtral_trace, last_run)
    assert_same_rows(imported, want)
    ref = open_trace(mixtral_trace)
    assert imported.layers == ref.layers and imported.num_experts == ref.num_experts
    assert imported.manifest["format_version"] == FORMAT_VERSION == 2
    assert not imported.has("weights") and imported.has("phase")
    assert len(imported.shards) > 1  # shards of whole requests
    assert imported.domains == ["code", "prose"]
    per_doc = [
        imported.domains[c] for c in np.unique(np.c_[imported.load().doc_id, imported.load().domain], axis=0)[:, 1]
    ]
    assert per_doc == want["domains"]
    assert len(imported.vocab) == len(ref.vocab)


def test_vllm_layers_of_every_decoder_layer_with_dense_ones_at_minus_one(dense_model, mixtral_trace, tmp_path):
    """A model whose decoder layer 1 is dense: the engine's 3 layers become the 2 MoE layers."""
    docs = documents(mixtral_trace)
    src = write_vllm_jsonl(tmp_path / "vllm.jsonl", docs, pad_layers=[1])
    imported = import_engine("vllm", src, dense_model, tmp_path / "out", progress=False)
    assert imported.layers == [0, 2]
    assert_same_rows(imported, expected_rows(mixtral_trace))
    # The MoE layers alone are read the same way.
    plain = import_engine(
        "vllm", write_vllm_jsonl(tmp_path / "plain.jsonl", docs), dense_model, tmp_path / "plain", progress=False
    )
    np.testing.assert_array_equal(plain.load().experts, imported.load().experts)


@pytest.mark.parametrize("with_shape", [False, True])
def test_sglang_jsonl_base64_imports_the_trace_row_for_row(mixtral_trace, tiny_mixtral, tmp_path, with_shape):
    src = write_sglang_jsonl(tmp_path / "sglang.jsonl", documents(mixtral_trace), with_shape=with_shape)
    imported = import_engine("sglang", src, tiny_mixtral, tmp_path / "out", progress=False)
    assert_same_rows(imported, expected_rows(mixtral_trace, last_run=False))


def write_recorder_dump(path, docs, num_experts: int, slots: int = 8):
    """An SGLang per-token recorder dump of `docs`: one extend pass of every prompt, then decode
    passes of one token per request; physical ids through a map with replicated experts."""
    import torch

    L = docs[0]["experts"].shape[1]
    # Physical experts: the logical ones, then a replica of experts 0 and 3 (ids E, E+1).
    p2l = np.tile(np.r_[np.arange(num_experts), [0, 3]], (L, 1))
    rng = np.random.default_rng(0)

    def physical(logical):  # (tokens, L, k) -> (L, tokens, slots) with -1 padding
        phys = logical.copy()
        swap = rng.random(phys.shape) < 0.5
        phys[swap & (logical == 0)] = num_experts
        phys[swap & (logical == 3)] = num_experts + 1
        out = np.full((phys.shape[0], L, slots), -1)
        out[:, :, : phys.shape[2]] = phys
        return torch.tensor(out.transpose(1, 0, 2), dtype=torch.int32)

    prompts = [max(1, len(d["tokens"]) // 2) for d in docs]
    records = [
        {
            "forward_pass_id": 0,
            "rank": 0,
            "forward_mode": 1,
            "extend_seq_lens": prompts,
            "input_ids": sum((d["tokens"][:P] for d, P in zip(docs, prompts)), []),
            "positions": sum((list(range(P)) for P in prompts), []),
            "topk_ids_of_layer": physical(np.concatenate([d["experts"][:P] for d, P in zip(docs, prompts)])),
            "misc_objects": [],
        }
    ]
    for step in range(max(len(d["tokens"]) for d in docs)):
        live = [(d, P + step) for d, P in zip(docs, prompts) if P + step < len(d["tokens"])]
        if not live:
            break
        records.append(
            {
                "forward_pass_id": step + 1,
                "rank": 0,
                "forward_mode": 2,
                "extend_seq_lens": None,
                "input_ids": [d["tokens"][p] for d, p in live],
                "positions": [p for _, p in live],
                "topk_ids_of_layer": physical(np.stack([d["experts"][p] for d, p in live])),
                "misc_objects": [],
            }
        )
    torch.save({"records": records, "last_physical_to_logical_map": torch.tensor(p2l)}, path)
    return path


def test_sglang_recorder_dump_imports_the_trace_row_for_row(mixtral_trace, tiny_mixtral, tmp_path):
    docs = documents(mixtral_trace)
    src = write_recorder_dump(tmp_path / "dump.pt", docs, open_trace(mixtral_trace).num_experts)
    imported = import_engine("sglang", src, tiny_mixtral, tmp_path / "out", progress=False, domain="served")
    assert_same_rows(imported, expected_rows(mixtral_trace))
    assert imported.domains == ["served"]  # the recorder names no domain


def test_recorder_dump_needing_arbitrary_unpickling_is_refused(tiny_mixtral, tmp_path):
    import torch

    torch.save({"records": [], "when": np.datetime64("2026-01-01")}, tmp_path / "dump.pt")
    with pytest.raises(RoutelensError, match="weights_only=True"):
        import_engine("sglang", tmp_path / "dump.pt", tiny_mixtral, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _line(tokens=(1, 2), out=(3,), experts=None, **extra) -> str:
    experts = [[[0, 1], [2, 3]]] * 2 if experts is None else experts
    return json.dumps(
        {
            "prompt_token_ids": list(tokens),
            "output_token_ids": list(out),
            "prompt_routed_experts": experts,
            "routed_experts": [[[4, 5], [6, 7]]],
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", r"line 2 is not valid JSON"),
        (_line(experts=[[[0, 1], [2]], [[0, 1], [2, 3]]]), r"line 2: `prompt_routed_experts` is ragged"),
        (_line(experts=[[[0, 9], [2, 3]]] * 2), r"line 2: token 0, MoE layer 0 has expert id 9, outside 0..7"),
        (
            _line(experts=[[[0, 1], [2, 3], [4, 5], [6, 7]]] * 2),
            r"line 2: routed experts have 4 layers but .* has 2 MoE layers",
        ),
        (_line(experts=[[[0, 1], [2, 3]]]), r"line 2: prompt_routed_experts has 1 rows for 2 prompt tokens"),
        (_line(tokens=("a", 2)), r"line 2: prompt token ids are not a list of non-negative integers"),
        ("[1, 2]", r"line 2 holds a list, not a JSON object"),
    ],
)
def test_malformed_vllm_lines_are_refused_with_nothing_written(tiny_mixtral, tmp_path, bad, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(_line() + "\n" + bad + "\n" + _line() + "\n")
    with pytest.raises(RoutelensError, match=message) as info:
        import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_non_utf8_line_is_refused(tiny_mixtral, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(_line().encode() + b"\n" + b'{"prompt_token_ids": "\xff"}\n')
    with pytest.raises(RoutelensError, match=r"line 2 is not UTF-8.*save the file as UTF-8"):
        import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False)


def test_existing_output_is_refused_unless_overwrite(tiny_mixtral, tmp_path):
    src = tmp_path / "ok.jsonl"
    src.write_text(_line() + "\n")
    first = import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False)
    assert first.num_tokens == 3
    src.write_text(_line() + "\n" + _line() + "\n")
    with pytest.raises(RoutelensError, match="--overwrite"):
        import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False)
    assert import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False, overwrite=True).num_tokens == 6


def test_sglang_ids_that_fit_no_shape_are_refused(tiny_mixtral, tmp_path):
    import base64

    src = tmp_path / "bad.jsonl"
    ids = base64.b64encode(np.arange(5, dtype="<i4").tobytes()).decode()
    src.write_text(
        json.dumps({"prompt_token_ids": [1, 2], "output_ids": [3], "meta_info": {"routed_experts": ids}}) + "\n"
    )
    with pytest.raises(RoutelensError, match=r"line 1: 5 decoded ids fit no \(tokens, layers, k\)"):
        import_engine("sglang", src, tiny_mixtral, tmp_path / "out", progress=False)


def test_request_whose_only_generated_token_was_never_run(tiny_mixtral, tmp_path):
    src = tmp_path / "one.jsonl"
    src.write_text(
        json.dumps(
            {
                "prompt_token_ids": [5, 6],
                "output_token_ids": [7],
                "prompt_routed_experts": [[[0, 1], [2, 3]]] * 2,
                "routed_experts": [],
            }
        )
        + "\n"
    )
    rows = import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False).load(["phase"])
    assert rows.token_id.tolist() == [5, 6] and rows.phase.tolist() == [0, 0]


def test_imported_trace_compares_equal_to_the_trace_it_came_from(mixtral_trace, tiny_mixtral, tmp_path):
    """The engine-against-trainer use of `compare`: the same routing, one row fewer per request."""
    from routelens.analysis.compare import compare_traces

    docs = documents(mixtral_trace)
    src = write_vllm_jsonl(tmp_path / "vllm.jsonl", docs, last_run=False)
    imported = import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False)
    result = compare_traces(mixtral_trace, imported)
    assert result["meta"]["unmatched"] == {"a": len(docs), "b": 0}
    assert all(
        v == {"first": 1.0, "overlap": 1.0, "set_equal": 1.0} for d in result["agreement"].values() for v in d.values()
    )
    assert result["any_layer_differs"]["all"] == 0.0
    margin = result["by_margin"]
    assert margin["source"] == "weights" and margin["trace"] == "a" and sum(margin["flips"]) == 0
    assert sum(margin["counts"]) == result["meta"]["tokens"] * len(imported.layers)

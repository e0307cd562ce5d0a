"""What vLLM and SGLang return, encoded the way their code encodes it, for the requests of real
traces: every form imports to the trace's own tokens, positions, phases and experts, row for row."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import pytest

import routelens
from routelens import RoutelensError, open_trace
from routelens.engines import import_engine
from tests.engines import forms
from tests.engines.conftest import documents


@pytest.fixture(scope="session")
def deepseek_model(tmp_path_factory):
    """A DeepSeek-V3-shaped config (3 decoder layers, layer 0 dense, 8 routed experts, top-2)."""
    from transformers import DeepseekV3Config

    from tests.conftest import build_tokenizer

    path = tmp_path_factory.mktemp("models") / "deepseek-v3-shaped"
    tokenizer = build_tokenizer()
    DeepseekV3Config(
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        first_k_dense_replace=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        n_shared_experts=1,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        vocab_size=len(tokenizer),
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def wide_trace(tmp_path_factory):
    """A tiny Mixtral of 300 experts (> 256: vLLM's uint16), traced by routelens."""
    from tests.conftest import SAMPLE_TEXT, save_tiny_model, tiny_mixtral_config

    root = tmp_path_factory.mktemp("wide")
    model = save_tiny_model(root / "model", tiny_mixtral_config(num_local_experts=300, intermediate_size=8))
    (root / "t.txt").write_text("\n\n".join(SAMPLE_TEXT))
    routelens.trace(model, [f"text={root / 't.txt'}"], root / "trace", seq_len=24, progress=False)
    return model, root / "trace"


def layout_of(model_dir) -> dict:
    from routelens.engines.model import engine_model

    m = engine_model(model_dir)
    return {"moe_layers": m.moe_layers, "hidden": m.num_hidden_layers, "ids": m.num_ids, "experts": m.num_experts}


def requests(trace, n=6, length=20):
    reqs = forms.requests_of(documents(trace)[:n], length=length)
    reqs[1].start = 3  # a request asked with a start (routed_experts_prompt_start / routed_experts_start_len)
    return reqs


def want(reqs) -> dict:
    rows = [forms.engine_rows(r) for r in reqs]
    pos = [np.arange(r.start, len(r.tokens) - 1) for r in reqs]
    return {
        "experts": np.concatenate(rows),
        "position": np.concatenate(pos),
        "token_id": np.concatenate([np.asarray(r.tokens)[p] for r, p in zip(reqs, pos)]),
        "phase": np.concatenate([(p >= len(r.prompt)).astype(int) for r, p in zip(reqs, pos)]),
    }


def assert_rows(trace, expected: dict, request_ids=None) -> None:
    rows = trace.load(["phase"] + (["request_id"] if request_ids is not None else []))
    np.testing.assert_array_equal(rows.experts, expected["experts"])
    np.testing.assert_array_equal(rows.position, expected["position"])
    np.testing.assert_array_equal(rows.token_id, expected["token_id"])
    np.testing.assert_array_equal(rows.phase, expected["phase"])
    if request_ids is not None:
        first = np.r_[True, rows.doc_id[1:] != rows.doc_id[:-1]]
        assert rows.request_id[first].tolist() == request_ids


MODELS = ["mixtral", "deepseek", "wide"]


@pytest.fixture
def served(request, tiny_mixtral, mixtral_trace, deepseek_model, wide_trace):
    """(model dir, requests from a real trace, layout) for each model shape."""
    if request.param == "mixtral":
        return tiny_mixtral, requests(mixtral_trace), layout_of(tiny_mixtral)
    if request.param == "deepseek":  # the Mixtral trace's 2 MoE layers as DeepSeek's layers 1 and 2
        return deepseek_model, requests(mixtral_trace), layout_of(deepseek_model)
    model, trace = wide_trace
    reqs = requests(trace, length=22)
    assert max(int(r.experts.max()) for r in reqs) > 255  # the wide ids need uint16
    return model, reqs, layout_of(model)


@pytest.mark.parametrize("served", MODELS, indirect=True)
@pytest.mark.parametrize("form", ["completions", "chat", "v021", "offline", "sglang", "sglang-pair"])
def test_every_engine_form_imports_the_trace_row_for_row(served, form, tmp_path):
    model, reqs, layout = served
    ids = [f"r{i}" for i in range(len(reqs))]
    lines = []
    for r, rid in zip(reqs, ids):
        if form == "completions":
            lines.append(forms.vllm_completion([r], layout, rid))
        elif form == "chat":
            lines.append(forms.vllm_chat(r, layout, rid))
        elif form == "v021":
            lines.append(forms.vllm_split(r, rid))
        elif form == "offline":
            lines.append(forms.vllm_offline(r, layout, rid))
        elif form == "sglang":
            lines.append({**forms.sglang_response(r, layout, rid), "input_ids": r.prompt})
        else:
            lines.append({"request": {"input_ids": r.prompt}, "response": forms.sglang_response(r, layout, rid)})
    # an aborted request: routing null
    aborted = forms.vllm_completion([reqs[0]], layout, "gone")
    aborted["choices"][0]["routed_experts"] = None
    if form == "sglang":
        lines.insert(2, {**forms.sglang_response(reqs[0], layout, "gone"), "input_ids": reqs[0].prompt})
        lines[2]["meta_info"]["routed_experts"] = None
    elif form in ("completions", "chat"):
        lines.insert(2, aborted)
    engine = "sglang" if form.startswith("sglang") else "vllm"
    src = forms.write_lines(tmp_path / "responses.jsonl", lines)
    tr = import_engine(engine, src, model, tmp_path / "out", progress=False)
    assert_rows(tr, want(reqs), request_ids=ids)
    assert tr.layers == layout["moe_layers"]
    report = tr.manifest["import"]
    assert report["aborted"] == (1 if form in ("completions", "chat", "sglang") else 0)
    assert not any(report["anomalies"].values()), report  # a clean file reports none


def test_n_choices_are_each_their_own_document_with_the_prompts_rows(tiny_mixtral, mixtral_trace, tmp_path):
    layout = layout_of(tiny_mixtral)
    full = forms.requests_of(documents(mixtral_trace)[:1], length=20)[0]
    short = forms.Req(full.prompt, full.output[:4], full.experts[: len(full.prompt) + 4])  # same prompt, 4 tokens
    src = forms.write_lines(tmp_path / "n2.jsonl", [forms.vllm_completion([full, short], layout, "cmpl-7")])
    tr = import_engine("vllm", src, tiny_mixtral, tmp_path / "out", progress=False)
    assert_rows(tr, want([full, short]), request_ids=["cmpl-7/0", "cmpl-7/1"])


def test_python_api_takes_request_outputs_and_sglang_pairs(tiny_mixtral, deepseek_model, mixtral_trace, tmp_path):
    layout = layout_of(deepseek_model)
    reqs = requests(mixtral_trace)
    outputs = [
        SimpleNamespace(
            request_id=f"q{i}",
            prompt_token_ids=r.prompt,
            outputs=[
                SimpleNamespace(
                    index=0,
                    token_ids=tuple(r.output),
                    routed_experts=forms.full_layers(forms.engine_rows(r), layout["moe_layers"], 3).astype(np.uint8),
                )
            ],
        )
        for i, r in enumerate(reqs)
    ]
    tr = routelens.import_vllm(outputs, model=deepseek_model, out=tmp_path / "v", domain="rollout", progress=False)
    assert_rows(tr, want(reqs), request_ids=[f"q{i}" for i in range(len(reqs))])
    assert tr.domains == ["rollout"]
    pairs = [(r.prompt, forms.sglang_response(r, layout, f"s{i}")) for i, r in enumerate(reqs)]
    tr = routelens.import_sglang(pairs, model=deepseek_model, out=tmp_path / "s", progress=False)
    assert_rows(tr, want(reqs), request_ids=[f"s{i}" for i in range(len(reqs))])


# -- checks -------------------------------------------------------------------------------------
def planted(reqs, layout):
    """A vLLM file of the DeepSeek-shaped model with each anomaly planted once (in its own request)."""
    lines = []
    for i, r in enumerate(reqs):
        rows = forms.full_layers(forms.engine_rows(r), layout["moe_layers"], layout["hidden"])
        if i == 1:
            rows[2, 1] = rows[2, 1, 0]  # a token's top-k repeats an expert (MoE layer 1)
        if i == 2:
            rows[3, 2, 1] = layout["ids"]  # an id >= E + Z
        if i == 3:
            rows[:, 2] = 0  # MoE layer 2 zero for the whole request
        if i == 4:
            rows[5, 0, 1] = 4  # dense layer 0 not zero
        lines.append(
            {
                "id": f"r{i}",
                "prompt_token_ids": r.prompt,
                "choices": [
                    {"index": 0, "token_ids": r.output, "routed_experts": forms.npy_b64(rows.astype(np.uint8))}
                ],
            }
        )
    return lines


def test_every_anomaly_planted_once_is_found_and_refused_under_strict(deepseek_model, mixtral_trace, tmp_path):
    from routelens.trace.summary import summarize

    layout = layout_of(deepseek_model)
    reqs = requests(mixtral_trace)
    src = forms.write_lines(tmp_path / "bad.jsonl", planted(reqs, layout))
    tr = import_engine("vllm", src, deepseek_model, tmp_path / "out", progress=False)
    report = tr.manifest["import"]
    assert report["anomalies"] == {
        "repeated_expert": 1,
        "id_out_of_range": 1,
        "moe_layer_all_zero": 1,
        "dense_layer_not_zero": 1,
    }
    assert report["left_out"] == 1  # the request with an id outside 0..E+Z-1 cannot be stored
    assert tr.manifest["totals"]["documents"] == len(reqs) - 1
    assert summarize(tmp_path / "out")["import"] == report  # `routelens info` shows it
    with pytest.raises(RoutelensError, match="repeated_expert=1.*--strict"):
        import_engine("vllm", src, deepseek_model, tmp_path / "strict", progress=False, strict=True)
    assert not (tmp_path / "strict").exists()


def test_info_prints_the_import_report(deepseek_model, mixtral_trace, tmp_path):
    from typer.testing import CliRunner

    from routelens.cli.main import app

    layout = layout_of(deepseek_model)
    src = forms.write_lines(tmp_path / "bad.jsonl", planted(requests(mixtral_trace), layout))
    out = tmp_path / "t"
    run = CliRunner().invoke(app, ["import", "vllm", str(src), "-m", str(deepseek_model), "-o", str(out), "-q"])
    assert run.exit_code == 0, run.output
    assert "repeated_expert 1" in run.output and "left out 1" in run.output
    info = CliRunner().invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "dense_layer_not_zero 1" in " ".join(info.output.split())
    strict = CliRunner().invoke(
        app, ["import", "vllm", str(src), "-m", str(deepseek_model), "-o", str(tmp_path / "s"), "-q", "--strict"]
    )
    assert strict.exit_code == 2 and "Traceback" not in strict.output


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda o: o["choices"][0].update(routed_experts=forms.npy_b64(np.zeros((2, 3, 2), np.uint8))),
            r"2 routing rows for 10 prompt \+ 10 output",
        ),
        (
            lambda o: o["choices"][0].update(routed_experts=forms.npy_b64(np.array([[["a"]]], dtype=object))),
            r"without pickle",
        ),
        (lambda o: o["choices"][0].update(routed_experts="not base64!"), r"not base64"),
        (lambda o: o["choices"][0].update(routed_experts=forms.npy_b64(np.zeros((19, 3, 2), np.float32))), r"float32"),
        (lambda o: o["choices"][0].update(routed_experts=forms.npy_b64(np.zeros((19, 3, 3), np.uint8))), r"k=2"),
    ],
)
def test_bad_engine_lines_are_refused_naming_the_line(deepseek_model, mixtral_trace, tmp_path, change, message):
    layout = layout_of(deepseek_model)
    reqs = forms.requests_of(documents(mixtral_trace)[:3], length=20)
    lines = [forms.vllm_completion([r], layout, f"r{i}") for i, r in enumerate(reqs)]
    change(lines[1])
    src = forms.write_lines(tmp_path / "x.jsonl", lines)
    with pytest.raises(RoutelensError, match=r"x\.jsonl line 2 choice 0: " + ".*" + message) as err:
        import_engine("vllm", src, deepseek_model, tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_raw_bytes_without_npy_header_are_read_when_one_dtype_fits(deepseek_model, mixtral_trace, tmp_path):
    import base64

    layout = layout_of(deepseek_model)
    reqs = forms.requests_of(documents(mixtral_trace)[:2], length=20)
    lines = []
    for i, r in enumerate(reqs):
        rows = forms.full_layers(forms.engine_rows(r), layout["moe_layers"], 3).astype(np.int32)
        line = forms.vllm_completion([r], layout, f"r{i}")
        line["choices"][0]["routed_experts"] = base64.b64encode(rows.tobytes()).decode()
        lines.append(line)
    tr = import_engine(
        "vllm", forms.write_lines(tmp_path / "raw.jsonl", lines), deepseek_model, tmp_path / "o", progress=False
    )
    assert_rows(tr, want(reqs))


def test_routelens_own_earlier_lines_keep_their_rules(tiny_mixtral, mixtral_trace, tmp_path):
    """P + O rows with -1-free MoE layers: routelens' own form, not an engine's (P + O - 1 - S)."""
    reqs = forms.requests_of(documents(mixtral_trace)[:2], length=20)
    lines = [
        {"prompt_token_ids": r.prompt, "output_token_ids": r.output, "routed_experts": r.experts.tolist()} for r in reqs
    ]
    tr = import_engine(
        "vllm", forms.write_lines(tmp_path / "own.jsonl", lines), tiny_mixtral, tmp_path / "o", progress=False
    )
    np.testing.assert_array_equal(tr.load().experts, np.concatenate([r.experts for r in reqs]))
    # and the SGLang spelling of routelens' own lines: input_ids/output_ids, base64 int32 of P + O rows
    lines = [
        {
            "input_ids": r.prompt,
            "output_ids": r.output,
            "meta_info": {"routed_experts": base64.b64encode(r.experts.astype("<i4").tobytes()).decode()},
        }
        for r in reqs
    ]
    tr = import_engine(
        "sglang", forms.write_lines(tmp_path / "own-sglang.jsonl", lines), tiny_mixtral, tmp_path / "s", progress=False
    )
    np.testing.assert_array_equal(tr.load().experts, np.concatenate([r.experts for r in reqs]))
    assert tr.num_tokens == sum(len(r.prompt) + len(r.output) for r in reqs)


# -- the recorder ------------------------------------------------------------------------------
def recorder_requests(trace, n=4, prompt=6, length=14):
    return forms.requests_of(documents(trace)[:n], prompt=prompt, length=length)


def true_request(rows, reqs) -> set[int]:
    """Which requests a document's (position, token, experts) rows could all belong to."""
    fits = set()
    for i, r in enumerate(reqs):
        if all(
            p < len(r.tokens) and r.tokens[p] == t and np.array_equal(r.experts[p], e)
            for p, t, e in zip(rows.position, rows.token_id, rows.experts)
        ):
            fits.add(i)
    return fits


def test_equal_length_requests_are_never_mixed_and_chained_whole(deepseek_model, mixtral_trace, tmp_path):
    layout = layout_of(deepseek_model)
    reqs = recorder_requests(mixtral_trace)  # four requests of 6 + 8 tokens, prefilled and decoded together
    assert len({len(r.tokens) for r in reqs}) == 1 and len({tuple(r.tokens) for r in reqs}) == len(reqs)
    src = forms.recorder_dump(
        tmp_path / "expert_distribution_recorder_1.5_0.pt", reqs, forms.batch_passes(reqs), layout
    )
    tr = import_engine("sglang-recorder", [src], deepseek_model, tmp_path / "out", progress=False)
    assert_rows(tr, want(reqs))  # every request whole, in its own document
    assert tr.manifest["import"]["unchained_tokens"] == 0
    # `import sglang FILE.pt` is the same reader
    same = import_engine("sglang", src, deepseek_model, tmp_path / "same", progress=False)
    np.testing.assert_array_equal(same.load().experts, tr.load().experts)


def test_a_pass_that_cannot_be_told_apart_is_never_assigned(deepseek_model, mixtral_trace, tmp_path):
    """Equal-length requests where one finishes early: which one left is unknowable from positions,
    so that pass's tokens (and their requests' later tokens) become documents of their own."""
    layout = layout_of(deepseek_model)
    reqs = recorder_requests(mixtral_trace, n=3)
    reqs[1] = forms.Req(reqs[1].prompt, reqs[1].output[:3], reqs[1].experts[:9])  # finishes after 2 decode steps
    src = forms.recorder_dump(tmp_path / "d.pt", reqs, forms.batch_passes(reqs), layout)
    tr = import_engine("sglang-recorder", [src], deepseek_model, tmp_path / "out", progress=False)
    report = tr.manifest["import"]
    assert report["unchained_tokens"] == 2 and report["unchained_passes"] == 1
    rows = tr.load()
    assert rows.experts.shape[0] == sum(len(r.tokens) - 1 for r in reqs)  # no token lost
    for d in np.unique(rows.doc_id):
        assert true_request(rows.slice(*np.flatnonzero(rows.doc_id == d)[[0, -1]] + [0, 1]), reqs)  # never mixed
    # the requests before the ambiguity are chained, their prefill whole
    assert len(np.unique(rows.doc_id)) == 3 + 2


def test_two_rank_recorder_import_equals_the_one_rank_import(deepseek_model, mixtral_trace, tmp_path):
    layout = layout_of(deepseek_model)
    reqs = recorder_requests(mixtral_trace)
    t = reqs[2].tokens
    reqs[2] = forms.Req(t[:4], t[4:9], reqs[2].experts[:9])  # a shorter prompt, finishing early
    passes = forms.batch_passes(reqs)
    runs = tmp_path / "run"
    runs.mkdir()
    for rank in (0, 1):
        forms.recorder_dump(
            runs / f"expert_distribution_recorder_1733600000.25_{rank}.pt", reqs, passes, layout, rank=rank
        )
    both = import_engine("sglang-recorder", [runs], deepseek_model, tmp_path / "two", progress=False)
    one = import_engine(
        "sglang-recorder",
        [runs / "expert_distribution_recorder_1733600000.25_0.pt"],
        deepseek_model,
        tmp_path / "one",
        progress=False,
    )
    a, b = both.load(["phase"]), one.load(["phase"])
    for name in ("doc_id", "position", "token_id", "experts", "phase"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert_rows(one, want(reqs))


def test_chunked_prefill_continues_its_request(deepseek_model, mixtral_trace, tmp_path):
    layout = layout_of(deepseek_model)
    reqs = recorder_requests(mixtral_trace, n=2, prompt=8, length=12)
    passes = [
        ("extend", [(0, 0, 8), (1, 0, 3)]),  # request 1's prompt chunked: 3 tokens, then 5
        ("decode", [(0, 8, 1)]),
        ("extend", [(1, 3, 5)]),
        ("decode", [(0, 9, 1), (1, 8, 1)]),
        ("decode", [(0, 10, 1), (1, 9, 1)]),
        ("decode", [(1, 10, 1)]),
    ]
    src = forms.recorder_dump(tmp_path / "c.pt", reqs, passes, layout)
    tr = import_engine("sglang-recorder", [src], deepseek_model, tmp_path / "out", progress=False)
    assert tr.manifest["import"]["unchained_tokens"] == 0
    assert_rows(tr, want(reqs))


def test_cli_sglang_recorder_takes_a_folder(deepseek_model, mixtral_trace, tmp_path):
    from typer.testing import CliRunner

    from routelens.cli.main import app

    layout = layout_of(deepseek_model)
    reqs = recorder_requests(mixtral_trace, n=2)
    (tmp_path / "run").mkdir()
    forms.recorder_dump(
        tmp_path / "run" / "expert_distribution_recorder_2.0_0.pt", reqs, forms.batch_passes(reqs), layout
    )
    out = tmp_path / "t"
    run = CliRunner().invoke(
        app, ["import", "sglang-recorder", str(tmp_path / "run"), "-m", str(deepseek_model), "-o", str(out), "-q"]
    )
    assert run.exit_code == 0, run.output
    assert_rows(open_trace(out), want(reqs))
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = CliRunner().invoke(
        app, ["import", "sglang-recorder", str(empty), "-m", str(deepseek_model), "-o", str(tmp_path / "u"), "-q"]
    )
    assert bad.exit_code == 2 and "expert_distribution_recorder" in bad.output
    assert json.loads((out / "manifest.json").read_text())["import"]["unchained_tokens"] == 0


def test_all_zero_layer_of_a_short_top1_request_is_not_an_anomaly():
    from routelens.engines.model import EngineModel
    from routelens.engines.records import ALL_ZERO_MIN_ROWS, ImportReport, check_request

    model = EngineModel("m", "mixtral", "softmax_topk", [0, 1], 2, 4, 1)
    experts = np.zeros((ALL_ZERO_MIN_ROWS - 1, 2, 1), np.int64)
    experts[:, 1] = 2
    report = ImportReport()
    assert check_request(model, experts, report) and report.anomalies["moe_layer_all_zero"] == 0
    longer = np.zeros((ALL_ZERO_MIN_ROWS, 2, 1), np.int64)
    longer[:, 1] = 2
    assert check_request(model, longer, report) and report.anomalies["moe_layer_all_zero"] == 1
    top2 = np.zeros((1, 2, 2), np.int64)
    top2[:, 1] = [1, 2]
    assert check_request(model.__class__("m", "mixtral", "softmax_topk", [0, 1], 2, 4, 2), top2, report)
    assert report.anomalies["moe_layer_all_zero"] == 2 and report.anomalies["repeated_expert"] == 0


def test_decode_chaining_assigns_only_when_one_order_keeping_assignment_fits():
    """The banded count of order-keeping assignments against brute force over small batches."""
    import itertools
    import random

    from routelens.engines.recorder import _unique_embedding

    def brute(tokens, nexts):
        fits = [
            list(c)
            for c in itertools.combinations(range(len(nexts)), len(tokens))
            if all(nexts[j] == t for j, t in zip(c, tokens))
        ]
        return fits[0] if len(fits) == 1 else None

    rng = random.Random(0)
    found = 0
    for _ in range(3000):
        m = rng.randint(0, 7)
        nexts = [rng.randint(0, 3) for _ in range(m)]
        n = rng.randint(0, m)
        tokens = (
            [nexts[j] for j in sorted(rng.sample(range(m), n))]
            if rng.random() < 0.5
            else [rng.randint(0, 3) for _ in range(n)]
        )
        got = _unique_embedding(tokens, nexts)
        assert got == brute(tokens, nexts), (tokens, nexts)
        found += got is not None
    assert 300 < found < 2700  # both outcomes exercised


def test_data_parallel_ranks_are_chained_each_on_their_own(deepseek_model, mixtral_trace, tmp_path):
    """Two ranks with batches of their own under the same forward pass ids: four requests, whole."""
    layout = layout_of(deepseek_model)
    reqs = recorder_requests(mixtral_trace, n=4)
    (tmp_path / "run").mkdir()
    for rank, mine in ((0, [0, 1]), (1, [2, 3])):
        passes = [(m, [(mine[i], f, c) for i, f, c in segs]) for m, segs in forms.batch_passes([reqs[j] for j in mine])]
        forms.recorder_dump(
            tmp_path / "run" / f"expert_distribution_recorder_3.0_{rank}.pt", reqs, passes, layout, rank=rank
        )
    tr = import_engine("sglang-recorder", [tmp_path / "run"], deepseek_model, tmp_path / "out", progress=False)
    assert tr.manifest["import"]["unchained_tokens"] == 0
    assert_rows(tr, want(reqs))


def test_sglang_batch_request_pairs_each_response_with_its_prompt(deepseek_model, mixtral_trace, tmp_path):
    layout = layout_of(deepseek_model)
    reqs = forms.requests_of(documents(mixtral_trace)[:3], length=16)
    line = {
        "request": {"input_ids": [r.prompt for r in reqs], "return_routed_experts": True},
        "response": [forms.sglang_response(r, layout, f"b{i}") for i, r in enumerate(reqs)],
    }
    tr = import_engine(
        "sglang", forms.write_lines(tmp_path / "b.jsonl", [line]), deepseek_model, tmp_path / "o", progress=False
    )
    assert_rows(tr, want(reqs), request_ids=["b0", "b1", "b2"])


def test_commands_show_their_help():
    from typer.testing import CliRunner

    from routelens.cli.main import app

    for args in (
        ["import", "vllm", "--help"],
        ["import", "sglang-recorder", "--help"],
        ["export", "placement", "--help"],
    ):
        run = CliRunner().invoke(app, args)
        assert run.exit_code == 0 and "docs/engines.md" in run.output, run.output

"""End-to-end tracing: rows equal what the model computed, windows, resume, refusals, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from routelens.tracer import TraceConfig

DOCS = [
    "short one",
    "The router sends each token to two of eight experts, and their outputs are combined by weight.",
    "def f(x):\n    return x * 2\n\nprint(f(3))",
    "a",
    "Question: Solve 2*x + 3 = 11 for x. Answer: 4. " * 3,
]


def write_txt(path: Path, docs) -> str:
    path.write_text("\n\n".join(d.replace("\n\n", "\n") for d in docs) + "\n")
    return str(path)


def experts_inputs(model, window_ids):
    """Independent ground truth: the (indices, weights) each layer's experts module received."""
    seen = []
    handles = [
        layer.mlp.experts.register_forward_pre_hook(lambda m, args: seen.append((args[1].clone(), args[2].clone())))
        for layer in model.model.layers
    ]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([window_ids]))
    finally:
        for h in handles:
            h.remove()
    return np.stack([s[0].numpy() for s in seen], 1), np.stack([s[1].float().numpy() for s in seen], 1)


def test_trace_equals_the_models_own_expert_inputs(tiny_mixtral, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = write_txt(tmp_path / "a.txt", DOCS)
    tr = routelens.trace(
        str(tiny_mixtral), [f"web={corpus}"], tmp_path / "t",
        TraceConfig(seq_len=16, batch_size=3, weights_dtype="float32", progress=False),
    )  # fmt: skip
    rows = tr.load(["weights"])
    tok = AutoTokenizer.from_pretrained(tiny_mixtral)
    model = AutoModelForCausalLM.from_pretrained(tiny_mixtral).eval()
    ids = tok([d.replace("\n\n", "\n") for d in DOCS])["input_ids"]
    assert len(rows) == sum(len(x) for x in ids)  # padding never recorded
    assert rows.experts.shape == (len(rows), 2, 2) and rows.weights.shape == (len(rows), 2, 2)
    for d, doc_ids in enumerate(ids):
        sel = rows.doc_id == d
        np.testing.assert_array_equal(rows.token_id[sel], doc_ids)
        np.testing.assert_array_equal(rows.position[sel], np.arange(len(doc_ids)))
        # Each window of 16 is a separate forward pass without padding.
        want_e, want_w = zip(*(experts_inputs(model, doc_ids[s : s + 16]) for s in range(0, len(doc_ids), 16)))
        np.testing.assert_array_equal(rows.experts[sel], np.concatenate(want_e))
        np.testing.assert_allclose(rows.weights[sel], np.concatenate(want_w), atol=1e-5)
    assert tr.manifest["moe_layers"] == [0, 1] and tr.manifest["family"] == "mixtral"
    assert tr.manifest["totals"]["tokens"] == len(rows) and tr.manifest["complete"] is True
    assert len(tr.vocab) == len(tok)


def test_domains_doc_ids_and_max_tokens(tiny_mixtral, tmp_path):
    a = write_txt(tmp_path / "a.txt", DOCS)
    b = write_txt(tmp_path / "b.txt", DOCS[::-1])
    tr = routelens.trace(str(tiny_mixtral), [f"one={a}", f"two={b}"], tmp_path / "t", max_tokens=40, progress=False)
    rows = tr.load()
    assert tr.domains == ["one", "two"]
    assert [int((rows.domain == d).sum()) for d in (0, 1)] == [40, 40]
    assert np.all(np.diff(rows.doc_id) >= 0) and rows.doc_id[0] == 0
    assert [c["tokens"] for c in tr.manifest["corpora"]] == [40, 40]


def test_store_probs_consistent_with_choices(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    tr = routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp_path / "t", store_probs=True, progress=False)
    rows = tr.load(["probs"])
    assert rows.probs.shape == (len(rows), 2, 8) and rows.probs.dtype == np.float16
    np.testing.assert_allclose(rows.probs.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    top = np.argsort(-rows.probs.astype(np.float32), axis=-1, kind="stable")[..., :2]
    agree = (np.sort(top, -1) == np.sort(rows.experts, -1)).all(-1).mean()
    assert agree > 0.98  # float16 storage may swap near-ties


def test_conllu_tokens_keep_their_words_tag(tiny_mixtral, tmp_path):
    from tests.corpus.test_readers import CONLLU

    path = tmp_path / "s.conllu"
    path.write_text(CONLLU)
    tr = routelens.trace(str(tiny_mixtral), [f"ud={path}"], tmp_path / "t", progress=False)
    rows = tr.load(["word_index", "upos"])
    from routelens.store.reader import UPOS_TAGS

    words = ["I", "do", "n't", "know", ",", "really", "."]
    tags = ["PRON", "AUX", "PART", "VERB", "PUNCT", "ADV", "PUNCT"]
    assert rows.word_index[0] == -1 and rows.upos[0] == -1  # BOS belongs to no word
    for w, (form, tag) in enumerate(zip(words, tags)):
        sel = rows.word_index == w
        assert sel.any(), form
        assert "".join(tr.vocab[t] for t in rows.token_id[sel]).strip() == form
        assert {UPOS_TAGS[u] for u in rows.upos[sel]} == {tag}
    table = ds.dataset(tr.path / "shards").to_table()
    assert table.column("upos").to_pylist()[1] == "PRON"


def test_bytes_per_token_layer_under_a_fifth_of_fp32_logits(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS * 60)
    tr = routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp_path / "t", progress=False)
    info = routelens.tracer.summarize(tr.path)
    assert info["tokens"] > 5000
    assert info["bytes_per_token_layer"] <= 32 / 5


def test_other_corpus_into_existing_trace_is_refused(tiny_mixtral, tmp_path):
    a = write_txt(tmp_path / "a.txt", DOCS)
    b = write_txt(tmp_path / "b.txt", DOCS[:2])
    routelens.trace(str(tiny_mixtral), [f"web={a}"], tmp_path / "t", progress=False)
    before = sorted(p.name for p in (tmp_path / "t" / "shards").iterdir())
    with pytest.raises(routelens.RoutelensError, match="--overwrite"):
        routelens.trace(str(tiny_mixtral), [f"web={b}"], tmp_path / "t", progress=False)
    assert sorted(p.name for p in (tmp_path / "t" / "shards").iterdir()) == before
    tr = routelens.trace(str(tiny_mixtral), [f"web={b}"], tmp_path / "t", overwrite=True, progress=False)
    assert tr.manifest["corpora"][0]["documents"] == 2


def _trace_cmd(model, corpus, out):
    return [sys.executable, "-m", "routelens.cli.main", "trace", str(model), "--corpus", f"web={corpus}",
            "--out", str(out), "--seq-len", "32", "--batch-size", "2", "--shard-tokens", "64", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_killed_trace_resumes_to_the_same_rows(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", [f"{i} " + DOCS[i % len(DOCS)] for i in range(1200)])
    routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp_path / "full", seq_len=32, batch_size=2,
                    shard_tokens=64, progress=False)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_trace_cmd(tiny_mixtral, corpus, tmp_path / "cut"), env=env, stderr=subprocess.DEVNULL)
    shards = tmp_path / "cut" / "shards"
    deadline = time.time() + 120
    while not (shards / "part-00003.parquet").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["complete"] is False, "the run finished before it could be killed"
    with pytest.raises(routelens.RoutelensError, match="incomplete"):
        routelens.open_trace(tmp_path / "cut")
    again = subprocess.run(_trace_cmd(tiny_mixtral, corpus, tmp_path / "cut"), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    a = ds.dataset(tmp_path / "full" / "shards").to_table().to_pylist()
    b = ds.dataset(tmp_path / "cut" / "shards").to_table().to_pylist()
    assert len(a) == len(b) and a == b


runner = CliRunner()


def test_cli_trace_and_info(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    res = runner.invoke(app, ["trace", str(tiny_mixtral), "--corpus", f"web={corpus}", "--out", str(tmp_path / "t"), "-q"])
    assert res.exit_code == 0, res.output
    assert "traced" in res.output
    res = runner.invoke(app, ["info", str(tmp_path / "t")])
    assert res.exit_code == 0 and "top-2 of 8" in res.output and "web" in res.output
    res = runner.invoke(app, ["info", str(tmp_path / "t"), "--json"])
    assert json.loads(res.output)["num_experts"] == 8


@pytest.mark.parametrize(
    "case, fragment",
    [("missing_model", "no model at"), ("empty_corpus", "holds no text"), ("bad_conllu", "not valid CoNLL-U"),
     ("bad_spec", "NAME=PATH"), ("dense_model", "LlamaForCausalLM"), ("missing_trace", "no routelens trace")],
)  # fmt: skip
def test_cli_errors_are_one_line_exit_2_and_write_nothing(case, fragment, tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    model, spec = str(tiny_mixtral), f"web={corpus}"
    if case == "missing_model":
        model = str(tmp_path / "nope")
    elif case == "empty_corpus":
        (tmp_path / "e.txt").write_text("\n\n  \n")
        spec = f"web={tmp_path / 'e.txt'}"
    elif case == "bad_conllu":
        (tmp_path / "b.conllu").write_text("1\tw\tw\tNOUN\t_\t_\t0\troot\t_\t_\n\n1\tbroken\n\n")
        spec = f"ud={tmp_path / 'b.conllu'}"
    elif case == "bad_spec":
        spec = corpus
    elif case == "dense_model":
        from tests.conftest import save_tiny_model
        from transformers import LlamaConfig

        model = str(save_tiny_model(tmp_path / "dense", LlamaConfig(hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)))  # fmt: skip
    args = ["trace", model, "--corpus", spec, "--out", str(tmp_path / "out"), "-q"]
    if case == "missing_trace":
        args = ["info", str(tmp_path / "nothing")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_tagger_gives_raw_text_upos(tiny_mixtral, tmp_path):
    pytest.importorskip("spacy")
    from routelens.store.reader import UPOS_TAGS

    corpus = write_txt(tmp_path / "a.txt", ["The cat sat on the mat.", "Dogs bark loudly."])
    tr = routelens.trace(str(tiny_mixtral), [f"prose={corpus}"], tmp_path / "t", tagger="spacy", progress=False)
    rows = tr.load(["word_index", "upos"])
    first_doc = rows.doc_id == 0
    tags = [UPOS_TAGS[u] for u, w in zip(rows.upos[first_doc], rows.word_index[first_doc]) if w >= 0]
    words = rows.word_index[first_doc]
    assert tags[0] == "DET" and tags[-1] == "PUNCT"
    assert sorted(set(words[words >= 0])) == list(range(7))  # The cat sat on the mat .
    assert tr.manifest["tagger"] == "spacy"

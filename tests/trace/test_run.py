"""End-to-end tracing in this process: rows equal what the model computed, windows, domains,
probabilities, words and tags, storage, refusals."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pytest

import routelens
from routelens.trace import TraceConfig
from tests.trace.corpora import DOCS, experts_inputs, write_txt


def test_trace_equals_the_models_own_expert_inputs(tiny_mixtral, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = write_txt(tmp_path / "a.txt", DOCS)
    tr = routelens.trace(
        str(tiny_mixtral),
        [f"web={corpus}"],
        tmp_path / "t",
        TraceConfig(seq_len=16, batch_size=3, weights_dtype="float32", progress=False),
    )
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
    info = routelens.trace.summarize(tr.path)
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

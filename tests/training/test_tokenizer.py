"""The BPE tokenizer routelens trains: lossless, Llama-style specials, loadable with AutoTokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from routelens.errors import RoutelensError
from routelens.training.tokenizer import train_tokenizer
from tests.conftest import SAMPLE_TEXT


def test_round_trip_specials_and_vocab_size(tmp_path):
    tok = train_tokenizer(SAMPLE_TEXT * 20, vocab_size=320)
    assert len(tok) == 320
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    text = "naïve café: ∑ x² — 日本語\n\tdef f(): return 42"  # unseen characters still round-trip (byte level)
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
    assert tok.decode(ids, skip_special_tokens=True) == text
    # merges were learned: a frequent word of the training text is fewer tokens than bytes
    assert len(tok("experts", add_special_tokens=False)["input_ids"]) < len("experts")

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")


def test_deterministic_and_bounded():
    a = train_tokenizer(SAMPLE_TEXT * 20, vocab_size=300)
    b = train_tokenizer(SAMPLE_TEXT * 20, vocab_size=300)
    assert a.get_vocab() == b.get_vocab()
    # max_chars cuts the training text: only the first document's merges can be learned
    short = train_tokenizer(["aaaa bbbb " * 50, "zzzq " * 1000], vocab_size=300, max_chars=100)
    assert "zz" not in short.get_vocab() and "aa" in short.get_vocab()


def test_too_small_vocab_names_the_value():
    with pytest.raises(RoutelensError, match="vocab size 100"):
        train_tokenizer(SAMPLE_TEXT, vocab_size=100)

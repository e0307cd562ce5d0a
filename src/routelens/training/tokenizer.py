"""The tokenizer of the models routelens trains: a byte-level BPE learned on the training corpus.

Byte-level, so any text (code, math, other scripts) round-trips without unknown tokens; saved as a
`PreTrainedTokenizerFast` so `AutoTokenizer.from_pretrained(model_dir)` loads it like any hub
model's. Like Llama-style tokenizers it prepends `<s>` when `add_special_tokens=True`; training
appends `</s>` at the end of each document itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from routelens.errors import RoutelensError

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (BOS, EOS, PAD)  # ids 0, 1, 2 in this order
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet must fit


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, *, max_chars: int | None = 16_000_000):
    """Learn a byte-level BPE of `vocab_size` tokens (specials included) from `texts`.

    `max_chars` bounds the text read (the merges of a small vocabulary settle long before the end
    of a large corpus). Deterministic: the same texts give the same vocabulary and merges.
    Returns a `transformers.PreTrainedTokenizerFast` with bos/eos/pad set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise RoutelensError(
            f"vocab size {vocab_size} is below {MIN_VOCAB} (256 bytes + 3 specials); use --vocab-size 2048."
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_bounded(texts, max_chars), trainer)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=1 << 30
    )


def _bounded(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    seen = 0
    for text in texts:
        if max_chars is not None and seen >= max_chars:
            return
        seen += len(text)
        yield text

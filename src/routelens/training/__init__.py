"""Building MoE models: tokenizer, training, capacity factor, evaluation, upcycling, parameter accounting."""

from enum import StrEnum


class UpcycleMode(StrEnum):
    """How `routelens upcycle` makes experts of a dense FFN (here, free of torch, for the CLI)."""

    COPY = "copy"  # every expert = the dense FFN; outputs equal the dense model's
    SPLIT = "split"  # the FFN's neurons partitioned into E experts; the sum of all experts = the FFN

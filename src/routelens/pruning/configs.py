"""The settings of `routelens importance`, `routelens prune` and `routelens ablate`, free of torch so
that the CLI reads their defaults and help (`routelens.cli.options`) without importing a model."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum

from routelens.config import choice, setting
from routelens.errors import RoutelensError


class Criterion(StrEnum):
    """How experts are ranked for pruning (importance.py computes the first three)."""

    REAP = "reap"  # mean over the tokens routed to the expert of weight x output norm (needs expert_norms)
    FREQUENCY = "frequency"  # share of the layer's assignments
    WEIGHTED = "weighted"  # mean combination weight x frequency
    RANDOM = "random"  # a seeded random choice: the baseline every criterion must beat


@dataclass
class ImportanceConfig:
    rows: int = 1 << 18  # trace rows per chunk read (bounds memory)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise RoutelensError(f"rows {self.rows} must be at least 1.")


@dataclass
class PruneConfig:
    keep: int | None = setting(None, "Experts to keep in every MoE layer (N); or give --drop-fraction.")
    drop_fraction: float | None = setting(None, "Share of each layer's experts to drop: N = E - round(F x E).")
    criterion: Criterion = setting(Criterion.FREQUENCY, "Rank experts by reap, frequency, weighted or random.")
    seed: int = setting(0, "Seed of --criterion random.")
    domain: str | None = setting(
        None, "Rank by the importance on this domain of the trace only.", shown_default="all domains"
    )
    overwrite: bool = setting(False, "Replace an existing --out directory.")
    progress: bool = True

    def __post_init__(self) -> None:
        self.criterion = choice(Criterion, self.criterion, "criterion")
        if (self.keep is None) == (self.drop_fraction is None):
            raise RoutelensError(
                "give exactly one of --keep N and --drop-fraction F (e.g. --keep 6 or --drop-fraction 0.25)."
            )
        if self.keep is not None and self.keep < 1:
            raise RoutelensError(f"--keep {self.keep} must be at least 1 expert per layer.")
        if self.drop_fraction is not None and not 0.0 <= self.drop_fraction < 1.0:
            raise RoutelensError(f"--drop-fraction {self.drop_fraction} must be in [0, 1); e.g. --drop-fraction 0.5.")

    def kept_count(self, num_experts: int) -> int:
        """N for a model of `num_experts` experts per layer, refused when it is not 1..E."""
        n = self.keep if self.keep is not None else num_experts - round(self.drop_fraction * num_experts)
        if not 1 <= n <= num_experts:
            raise RoutelensError(
                f"--keep {n} is outside 1..{num_experts} (the model's experts per layer); pick N <= {num_experts}."
            )
        return n

    def to_json(self) -> dict:
        return {
            k: (str(v) if isinstance(v, StrEnum) else v) for k, v in dataclasses.asdict(self).items() if k != "progress"
        }


_EXPERT = re.compile(r"\s*(\d+)\s*:\s*(\d+(?:\s*,\s*\d+)*)\s*")


def parse_experts(specs) -> dict[int, list[int]]:
    """`["3:5", "3:1,2", "0:7"]` (decoder layer : expert ids) -> {0: [7], 3: [1, 2, 5]}."""
    out: dict[int, set[int]] = {}
    for spec in specs:
        match = _EXPERT.fullmatch(str(spec))
        if not match:
            raise RoutelensError(
                f"--expert {spec!r} is not LAYER:EXPERT (decoder layer and expert id, e.g. 3:5 or 3:1,5)."
            )
        out.setdefault(int(match[1]), set()).update(int(e) for e in match[2].split(","))
    return {layer: sorted(ids) for layer, ids in sorted(out.items())}


@dataclass
class AblateConfig:
    experts: tuple[str, ...] = setting(
        (), "LAYER:EXPERT to remove (decoder layer as in the trace, expert id), repeatable; 3:1,5 removes two."
    )
    seq_len: int | None = setting(None, "Window length.", shown_default="the training one, else 128")
    batch_size: int = setting(16, "Windows per forward pass.")
    max_tokens: int | None = setting(50_000, "At most this many held-out tokens per corpus (0: all).")
    held_out: bool = setting(
        True, "Score the documents `routelens train` held out (from training.json) where the model has one."
    )
    progress: bool = True

    def __post_init__(self) -> None:
        self.max_tokens = self.max_tokens or None  # 0 is the command line's "all"
        self.experts = tuple(self.experts)
        parse_experts(self.experts)  # refuse a malformed one now
        if (self.seq_len is not None and self.seq_len < 2) or self.batch_size < 1:
            raise RoutelensError(f"seq_len {self.seq_len} / batch_size {self.batch_size} too small; use >= 2 and >= 1.")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise RoutelensError(f"max_tokens {self.max_tokens} is below 2; raise --max-tokens.")

    @property
    def removed(self) -> dict[int, list[int]]:
        return parse_experts(self.experts)

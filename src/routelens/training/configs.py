"""The settings of the training tools, free of torch so that the CLI can read their defaults and
help (`routelens.cli.options`) without importing a model: TrainConfig (`routelens train`),
EvalConfig (`routelens eval`) and UpcycleConfig (`routelens upcycle`).

Counts are `num_*` as in transformers (`num_experts` = num_local_experts, `num_layers` =
num_hidden_layers); `experts` elsewhere in routelens is an array of expert ids.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from routelens.config import choice, setting
from routelens.errors import RoutelensError
from routelens.models.architectures import Architecture, parse_architecture
from routelens.training import UpcycleMode


class BalanceLoss(StrEnum):
    PER_LAYER = "per-layer"  # Switch loss on each layer's tokens, summed over layers
    POOLED = "pooled"  # transformers' load_balancing_loss_func: all layers' tokens pooled


# Earlier names of TrainConfig fields: still written to and read from training.json, whose keys
# are a contract (counts are num_* as in transformers; `experts` is an id array everywhere else).
LEGACY_KEYS = {"experts": "num_experts", "layers": "num_layers"}


# Fields added after runs were saved without them, with the value those runs had.
ADDED_FIELDS = {"architecture": "mixtral", "bias_update_rate": None}


def current_names(saved: dict) -> dict:
    """A saved config with its LEGACY_KEYS under today's names, and the fields it predates filled in."""
    named = {LEGACY_KEYS.get(k, k): v for k, v in saved.items() if not (k in LEGACY_KEYS and LEGACY_KEYS[k] in saved)}
    return ADDED_FIELDS | named


@dataclass
class TrainConfig:
    num_experts: int = setting(8, "Experts per MoE layer (num_local_experts).")
    top_k: int = setting(2, "Experts per token (num_experts_per_tok).")
    num_layers: int = setting(4, "Decoder layers, each with a sparse MoE block (num_hidden_layers).")
    hidden: int = setting(128, "Hidden size.")
    intermediate: int | None = setting(None, "Expert FFN width.", shown_default="2 x hidden")
    heads: int = setting(4, "Attention heads (as many key/value heads).")
    seq_len: int = setting(128, "Tokens per training window.")
    batch_size: int = setting(32, "Windows per step.")
    steps: int | None = setting(
        500, "Training steps (the LR schedule spans them).", shown_default="500 unless --minutes"
    )
    minutes: float | None = setting(None, "Wall-clock budget in minutes; stops early (not deterministic).")
    lr: float = setting(3e-3, "Peak AdamW learning rate (warm-up, then cosine to lr/10).")
    warmup_steps: int = 30  # linear warm-up, then cosine decay to lr / 10
    weight_decay: float = 0.1  # on matrices only
    aux_loss_coef: float = setting(0.01, "Load-balancing loss weight.")
    z_loss_coef: float = setting(1e-3, "Router z-loss weight.")
    balance: BalanceLoss = setting(
        BalanceLoss.PER_LAYER, "Balance loss: per-layer (summed over layers) or pooled (transformers')."
    )
    capacity_factor: float | None = setting(None, "Train-time expert capacity factor.", shown_default="unlimited")
    architecture: Architecture = setting(
        Architecture.MIXTRAL,
        "MoE family to build: mixtral, olmoe, qwen3_moe or deepseek_v3 (same sizes, each family's own routing).",
    )
    bias_update_rate: float | None = setting(
        None,
        "Aux-loss-free balancing: each step every expert's selection bias moves this much toward balance "
        "(DeepSeek-V3's gamma).",
        shown_default="1e-3 for deepseek_v3, else 0",
    )
    checkpoint_every: int = setting(100, "Steps between checkpoints kept in OUT/checkpoints/.")
    keep_checkpoints: int = setting(0, "Keep only the last N checkpoints (0: all).")
    seed: int = setting(0, "Seed of initialisation, data split and order.")
    vocab_size: int = setting(2048, "BPE vocabulary size (specials included).")
    val_tokens: int = setting(20_000, "Held-out tokens per corpus for the validation loss.")
    init: str | None = setting(
        None, "Start from this checkpoint of the --architecture (e.g. a Mixtral from `routelens upcycle`)."
    )

    def __post_init__(self) -> None:
        self.balance = BalanceLoss(self.balance)
        self.architecture = parse_architecture(self.architecture)
        if self.bias_update_rate is not None and self.bias_update_rate < 0:
            raise RoutelensError(
                f"bias update rate {self.bias_update_rate} is negative; pass e.g. --bias-update-rate 1e-3."
            )
        if self.bias_update_rate and not self.architecture.default_bias_update_rate:
            raise RoutelensError(
                f"--architecture {self.architecture} has no selection bias to update; drop "
                "--bias-update-rate or use --architecture deepseek_v3."
            )
        positive = (
            "num_experts",
            "top_k",
            "num_layers",
            "hidden",
            "heads",
            "batch_size",
            "checkpoint_every",
            "vocab_size",
            "val_tokens",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise RoutelensError(
                    f"{name} = {getattr(self, name)} must be at least 1; pass a positive --{name.replace('_', '-')}."
                )
        if self.top_k > self.num_experts:
            raise RoutelensError(
                f"top-k {self.top_k} exceeds the {self.num_experts} experts; use --top-k <= --num-experts."
            )
        if self.hidden % self.heads:
            raise RoutelensError(f"hidden {self.hidden} is not divisible by heads {self.heads}; pick e.g. --heads 4.")
        if self.seq_len < 8:
            raise RoutelensError(f"seq_len {self.seq_len} is too short; use --seq-len 128.")
        if self.steps is None and self.minutes is None:
            raise RoutelensError("neither steps nor minutes given; pass --steps N or --minutes M.")
        if (self.steps is not None and self.steps < 1) or (self.minutes is not None and self.minutes <= 0):
            raise RoutelensError(f"steps {self.steps} / minutes {self.minutes} must be positive.")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise RoutelensError(
                f"capacity factor {self.capacity_factor} is not positive; use e.g. --capacity-factor 1.25."
            )
        if min(self.lr, self.aux_loss_coef + 1, self.z_loss_coef + 1, self.weight_decay + 1) <= 0 or self.lr <= 0:
            raise RoutelensError(f"lr {self.lr} must be positive and loss coefficients non-negative.")

    @property
    def resolved_bias_update_rate(self) -> float:
        return self.architecture.default_bias_update_rate if self.bias_update_rate is None else self.bias_update_rate

    def to_json(self) -> dict:
        out = {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in dataclasses.asdict(self).items()}
        return out | {old: out[new] for old, new in LEGACY_KEYS.items()}

    def identity(self) -> dict:
        """The fields that change what is trained (not how long one run may take or what is kept)."""
        skip = ("minutes", "keep_checkpoints", "checkpoint_every", *LEGACY_KEYS)
        return {k: v for k, v in self.to_json().items() if k not in skip}

    def differences(self, saved: dict) -> list[str]:
        """The identity fields on which a saved config (training.json, trainer_state.pt; older ones
        under the LEGACY_KEYS names) differs from this one."""
        saved = current_names(saved)
        return [k for k, v in self.identity().items() if saved.get(k) != v]


# The model `routelens demo` trains: ~3.7M parameters, about 3.5 minutes on 2 CPU cores.
DEMO_CONFIG = TrainConfig(
    num_experts=8,
    top_k=2,
    num_layers=4,
    hidden=128,
    intermediate=256,
    heads=4,
    seq_len=128,
    batch_size=32,
    steps=400,
    lr=3e-3,
    warmup_steps=30,
    aux_loss_coef=0.01,
    z_loss_coef=1e-3,
    checkpoint_every=100,
)


@dataclass(frozen=True)
class UpcycleConfig:
    num_experts: int = setting(dataclasses.MISSING, "Routed experts per layer (E).")
    top_k: int = setting(dataclasses.MISSING, "Experts each token is routed to (1..E).")
    mode: UpcycleMode = setting(
        UpcycleMode.COPY,
        "copy: every expert = the dense FFN (outputs equal the dense model's). split: the FFN's neurons cut into E "
        "experts of intermediate/E (all experts summed = the FFN; top-k routing is not).",
    )
    seed: int = setting(0, "Seed of the router initialisation and of split's neuron permutation.")

    def __post_init__(self):
        object.__setattr__(self, "mode", choice(UpcycleMode, self.mode, "--mode"))
        if self.num_experts < 2:
            raise RoutelensError(
                f"--num-experts {self.num_experts}: an MoE needs at least 2 experts; e.g. --num-experts 8."
            )
        if not 1 <= self.top_k <= self.num_experts:
            raise RoutelensError(
                f"--top-k {self.top_k} is outside 1..{self.num_experts} (the number of experts); e.g. --top-k 2."
            )

    def to_json(self) -> dict:
        """The upcycle.json record's settings, with the count also under its earlier key."""
        out = {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in dataclasses.asdict(self).items()}
        return out | {"experts": self.num_experts}


@dataclass
class EvalConfig:
    capacity_factor: float | None = setting(
        None, "Expert capacity factor: ceil(tokens x k / E x CF) slots per expert per batch.", shown_default="unlimited"
    )
    top_k: int | None = setting(None, "Experts per token at evaluation.", shown_default="the model's")
    seq_len: int | None = setting(None, "Window length.", shown_default="the training one, else 128")
    batch_size: int = setting(32, "Windows per forward pass; capacity is computed over one batch.")
    max_tokens: int | None = setting(100_000, "At most this many tokens per corpus (0: all).")  # None: all too
    progress: bool = True

    def __post_init__(self) -> None:
        self.max_tokens = self.max_tokens or None  # 0 is the command line's "all"
        if (self.seq_len is not None and self.seq_len < 2) or self.batch_size < 1:
            raise RoutelensError(f"seq_len {self.seq_len} / batch_size {self.batch_size} too small; use >= 2 and >= 1.")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise RoutelensError(f"max_tokens {self.max_tokens} is below 2; raise --max-tokens.")

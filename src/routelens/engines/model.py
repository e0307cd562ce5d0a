"""What an engine's routing arrays mean for one model: its MoE layers, E and k, read from the
model directory's config alone (the modules are built on the meta device: no weights are read).

Serving engines return expert ids per token as (tokens, layers, k), where `layers` is either the
MoE layers only or every decoder layer with the dense ones holding -1. `EngineModel.to_moe_layers`
turns either into routelens' (tokens, moe layers, k), refusing anything else in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from routelens.errors import RoutelensError

NO_EXPERT = -1  # engines' placeholder in dense layers and in unused slots


@dataclass(frozen=True)
class EngineModel:
    """The routing layout of a model, as `routelens trace` would record it."""

    name: str  # MODEL_DIR as given
    family: str
    rule: str
    moe_layers: list[int]  # true decoder-layer indices of the MoE layers
    num_hidden_layers: int
    num_experts: int
    top_k: int
    num_zero_experts: int = 0  # Z zero-computation experts: ids E .. E+Z-1 are valid choices
    model: dict = field(default_factory=dict)  # the manifest's `model` entry
    tokenizer: dict = field(default_factory=dict)  # the manifest's `tokenizer` entry
    vocab: list[str] = field(default_factory=list)  # display text of each token id

    def to_moe_layers(self, ids: np.ndarray, where: str) -> np.ndarray:
        """(tokens, layers, k') engine ids -> (tokens, moe layers, k) int64, checked.

        `layers` may be the MoE layers or all decoder layers (dense ones all -1); k' may exceed k
        when the engine pads with -1 (SGLang's recorder keeps 8 slots)."""
        if len(ids) == 0:  # no rows (e.g. one generated token, never run): nothing to check
            return np.zeros((0, len(self.moe_layers), self.top_k), np.int64)
        if ids.ndim != 3:
            raise RoutelensError(
                f"{where}: routed experts have shape {tuple(ids.shape)}, not (tokens, layers, k); "
                "give one list of k expert ids per layer per token."
            )
        n, layers, width = ids.shape
        L, k = len(self.moe_layers), self.top_k
        if layers == self.num_hidden_layers and layers != L:
            dense = np.setdiff1d(np.arange(layers), self.moe_layers)
            if (ids[:, dense] != NO_EXPERT).any():
                layer = int(dense[(ids[:, dense] != NO_EXPERT).any(axis=(0, 2))][0])
                raise RoutelensError(
                    f"{where}: decoder layer {layer} is dense in {self.name} but holds expert ids; "
                    f"give the {L} MoE layers {self.moe_layers} or all {layers} layers with -1 in dense ones."
                )
            ids = ids[:, self.moe_layers]
        elif layers != L:
            raise RoutelensError(
                f"{where}: routed experts have {layers} layers but {self.name} has {L} MoE layers of "
                f"{self.num_hidden_layers} decoder layers; import with the model the engine served."
            )
        if width < k:
            raise RoutelensError(
                f"{where}: {width} expert ids per layer but {self.name} routes each token to k={k}; "
                "import with the model the engine served."
            )
        if width > k:
            if (ids[:, :, k:] != NO_EXPERT).any():
                raise RoutelensError(
                    f"{where}: more than k={k} expert ids per layer (slots beyond k must be -1); "
                    "import with the model the engine served."
                )
            ids = ids[:, :, :k]
        bad = (ids < 0) | (ids >= self.num_experts)
        if bad.any():
            t, layer, _ = np.argwhere(bad)[0]
            raise RoutelensError(
                f"{where}: token {int(t)}, MoE layer {self.moe_layers[layer]} has expert id "
                f"{int(ids[t, layer][bad[t, layer]][0])}, outside 0..{self.num_experts - 1} "
                f"(E={self.num_experts}); import with the model the engine served."
            )
        return ids.astype(np.int64, copy=False)

    @property
    def num_ids(self) -> int:
        return self.num_experts + self.num_zero_experts

    def engine_layers(self, ids: np.ndarray, where: str, anomalies: dict[str, int]) -> np.ndarray:
        """(rows, layers, k) ids as vLLM and SGLang return them -> (rows, moe layers, k) int64.

        `layers` is every decoder layer (the engines' capture buffers, dense layers left at zero) or
        the MoE layers alone (vLLM v0.21's lists); which layers are MoE comes from the model's config,
        never from the values. What an engine's silent capture bug would leave is counted in
        `anomalies` (a dense layer that is not zero; `check_request` counts the rest)."""
        L, k = len(self.moe_layers), self.top_k
        if len(ids) == 0:
            return np.zeros((0, L, k), np.int64)
        if ids.ndim != 3:
            raise RoutelensError(
                f"{where}: routed experts have shape {tuple(ids.shape)}, not (tokens, layers, k); "
                "save routed_experts as the engine returns it."
            )
        n, layers, width = ids.shape
        if width != k:
            raise RoutelensError(
                f"{where}: {width} expert ids per layer but {self.name} routes each token to k={k}; "
                "import with the model the engine served."
            )
        if layers == self.num_hidden_layers:
            dense = np.setdiff1d(np.arange(layers), self.moe_layers)
            if dense.size:
                bad = int((ids[:, dense] != 0).any(axis=(0, 2)).sum())
                if bad:
                    anomalies["dense_layer_not_zero"] = anomalies.get("dense_layer_not_zero", 0) + bad
            ids = ids[:, self.moe_layers]
        elif layers != L:
            raise RoutelensError(
                f"{where}: routed experts have {layers} layers but {self.name} has {self.num_hidden_layers} "
                f"decoder layers ({L} MoE); import with the model the engine served."
            )
        return ids.astype(np.int64, copy=False)


def engine_model(model_dir: str | os.PathLike, *, trust_remote_code: bool = False) -> EngineModel:
    """Describe the model in `model_dir` (config.json and tokenizer; no weights needed)."""
    from routelens.models.families import describe_model, text_config
    from routelens.models.loading import config_sha256, load_skeleton, vocab_strings
    from routelens.trace.config import TraceConfig

    skeleton, tokenizer = load_skeleton(model_dir, TraceConfig(trust_remote_code=trust_remote_code))
    spec = describe_model(skeleton)
    config = skeleton.config
    text = text_config(config)
    hidden = int(getattr(text, "num_hidden_layers", None) or (max(spec.moe_layers) + 1))
    return EngineModel(
        name=str(model_dir),
        family=spec.family,
        rule=spec.rule,
        moe_layers=list(spec.moe_layers),
        num_hidden_layers=hidden,
        num_experts=spec.num_experts,
        top_k=spec.top_k,
        num_zero_experts=int(getattr(spec, "num_zero_experts", 0) or 0),
        model={
            "name_or_path": str(model_dir),
            "architecture": type(skeleton).__name__,
            "model_type": config.model_type,
            "config_sha256": config_sha256(config),
            "num_hidden_layers": hidden,
            "hidden_size": getattr(text, "hidden_size", None),
            "expert_params": spec.expert_params,
        },
        tokenizer={"name": getattr(tokenizer, "name_or_path", None), "vocab_size": len(tokenizer)},
        vocab=vocab_strings(tokenizer),
    )

"""Sparse upcycling: turn a dense Llama/Mistral/Qwen2-style checkpoint into a Mixtral MoE checkpoint.

    from routelens.training.upcycle import upcycle
    upcycle("dense/", "moe/", num_experts=8, top_k=2, mode="copy")   # then: routelens train --init moe/

Everything but the feed-forward blocks is copied unchanged (embeddings, attention, norms, lm_head);
each layer's FFN becomes E experts and a freshly initialised router (normal, std = the dense
config's `initializer_range`, seeded). Two ways to make the experts (`UpcycleMode`):

- `copy` (Komatsuzaki et al., "Sparse Upcycling"): every expert is the dense FFN. Mixtral's router
  renormalises its top-k weights to sum to 1, so sum_k w_k * FFN(x) = FFN(x): the upcycled model
  computes exactly the dense model's function at initialisation, whatever the router says.
- `split` (as in LLaMA-MoE): the FFN's intermediate neurons are partitioned (a seeded random
  permutation, then E equal parts of intermediate/E neurons) into E smaller experts. Since
  FFN(x) = down(act(gate x) * up x) is a sum over neurons, the sum of all E experts with weight 1
  equals the dense FFN. Mixtral routes only top-k of them with weights that sum to 1, so the
  upcycled model does NOT equal the dense model at initialisation (it computes a weighted part of
  the FFN): it starts from the dense model's knowledge, cut into pieces, and needs training.

Mixtral's attention has no biases: a Qwen2 checkpoint (q/k/v biases) is accepted only when those
biases are all zero, since dropping non-zero ones would silently change the model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from routelens.atomic import atomic_dir, write_json
from routelens.config import build_config
from routelens.errors import RoutelensError
from routelens.progress import transformers_bars_off
from routelens.training import UpcycleMode
from routelens.training.configs import UpcycleConfig

# Dense families whose decoder layer is Mixtral's minus the MoE: RMSNorm, RoPE attention, SwiGLU FFN.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
# Config fields that only MoE configs have.
_MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")
# Files copied from the dense directory when present, so that AutoTokenizer works on the output.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def split_size(intermediate_size: int, experts: int) -> int:
    """Neurons per expert in split mode; the dense size must divide evenly."""
    if intermediate_size % experts:
        raise RoutelensError(
            f"--mode split: the dense intermediate size {intermediate_size} is not divisible by --num-experts {experts}; "
            f"choose a divisor of {intermediate_size} or use --mode copy."
        )
    return intermediate_size // experts


def expert_weights(
    gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, cfg: UpcycleConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral's fused expert tensors from one dense SwiGLU FFN.

    gate, up: (I, H) and down: (H, I), as nn.Linear stores them. Returns gate_up_proj (E, 2*I', H),
    gate rows first then up rows (the order MixtralExperts chunks them), and down_proj (E, H, I'),
    with I' = I for copy and I / E for split.
    """
    inter = gate.shape[0]
    if cfg.mode is UpcycleMode.COPY:
        gate_up = torch.cat([gate, up], dim=0)  # (2I, H)
        return gate_up.unsqueeze(0).repeat(cfg.num_experts, 1, 1), down.unsqueeze(0).repeat(cfg.num_experts, 1, 1)
    part = split_size(inter, cfg.num_experts)
    neurons = torch.randperm(inter, generator=generator).view(cfg.num_experts, part)  # (E, I/E) neuron ids
    gate_up = torch.cat([gate[neurons], up[neurons]], dim=1)  # (E, 2I/E, H)
    down_proj = down[:, neurons].permute(1, 0, 2).contiguous()  # (H, E, I/E) -> (E, H, I/E)
    return gate_up, down_proj


def _check_dense(config, dense_dir: Path) -> None:
    model_type = getattr(config, "model_type", "?")
    if any(getattr(config, f, None) for f in _MOE_FIELDS):
        raise RoutelensError(
            f"{dense_dir} is already a Mixture-of-Experts model ({model_type}); upcycle needs a dense model."
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise RoutelensError(
            f"{dense_dir} is a {model_type!r} model; upcycle supports dense {', '.join(SUPPORTED_MODEL_TYPES)} "
            "checkpoints (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)."
        )
    if getattr(config, "use_sliding_window", False):
        raise RoutelensError(
            f"{dense_dir}: Qwen2 per-layer sliding windows have no Mixtral equivalent; upcycle a model without them."
        )
    if getattr(config, "hidden_act", "silu") not in ("silu", "swish", "gelu", "gelu_pytorch_tanh", "relu"):
        raise RoutelensError(f"{dense_dir}: activation {config.hidden_act!r} is not one Mixtral experts can use.")


def mixtral_config(dense_config, cfg: UpcycleConfig, intermediate_size: int):
    """The MixtralConfig with the dense model's shapes, attention and RoPE, plus the MoE settings."""
    from transformers import MixtralConfig

    c = dense_config
    return MixtralConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings,
        initializer_range=c.initializer_range,
        rms_norm_eps=c.rms_norm_eps,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=bool(c.tie_word_embeddings),
        rope_parameters=c.rope_parameters,
        sliding_window=getattr(c, "sliding_window", None) if c.model_type == "mistral" else None,
        attention_dropout=c.attention_dropout,
        num_local_experts=cfg.num_experts,
        num_experts_per_tok=cfg.top_k,
        dtype=c.dtype,
    )


def _refuse_biases(state: dict[str, torch.Tensor], dense_dir: Path) -> None:
    """Mixtral has no biases: zero ones can be dropped exactly, non-zero ones cannot."""
    for name, tensor in state.items():
        if name.endswith(".bias") and torch.any(tensor != 0):
            raise RoutelensError(
                f"{dense_dir} has non-zero biases ({name}) that Mixtral layers cannot hold: dropping them would change "
                "the model; upcycle a bias-free (Llama/Mistral-style) checkpoint."
            )


def upcycled_state_dict(state: dict[str, torch.Tensor], num_layers: int, cfg: UpcycleConfig, router_std: float):
    """The Mixtral state dict from a dense one: FFNs -> experts, new routers, the rest unchanged."""
    generator = torch.Generator().manual_seed(cfg.seed)
    out = {n: t for n, t in state.items() if ".mlp." not in n and not n.endswith(".bias")}
    for i in range(num_layers):
        p = f"model.layers.{i}.mlp."
        gate, up, down = state[p + "gate_proj.weight"], state[p + "up_proj.weight"], state[p + "down_proj.weight"]
        gate_up, down_proj = expert_weights(gate, up, down, cfg, generator)
        out[p + "experts.gate_up_proj"] = gate_up  # (E, 2I', H)
        out[p + "experts.down_proj"] = down_proj  # (E, H, I')
        router = torch.randn(cfg.num_experts, gate.shape[1], generator=generator) * router_std  # (E, H)
        out[p + "gate.weight"] = router.to(gate.dtype)
    return out


def upcycle(
    dense_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: UpcycleConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    **overrides,
) -> Path:
    """Write a MixtralForCausalLM checkpoint (with the dense model's tokenizer files) to `out_dir`;
    keyword overrides set UpcycleConfig fields (`num_experts` and `top_k` are required).

    The output is assembled in a temporary directory beside `out_dir` and renamed into place, so an
    interrupted run leaves nothing half-written. A non-empty `out_dir` is refused unless `overwrite`;
    `out_dir` is locked for the run (`routelens.lock`), so a second run into it is refused in one line.
    """
    from routelens.lock import output_lock

    cfg = build_config(UpcycleConfig, config, overrides)
    with output_lock(out_dir, what="upcycle"):
        return _upcycle(Path(dense_dir), Path(out_dir), cfg, overwrite=overwrite, progress=progress)


def _upcycle(dense_dir: Path, out: Path, cfg: UpcycleConfig, *, overwrite: bool, progress: bool) -> Path:
    """The body of `upcycle`, run with `out` locked."""
    from transformers import AutoConfig, AutoModelForCausalLM, MixtralForCausalLM

    from routelens.progress import progress_bar

    if not dense_dir.is_dir():
        raise RoutelensError(f"no directory {dense_dir}; give the dense model's checkpoint directory.")
    if not (dense_dir / "config.json").is_file():
        raise RoutelensError(f"{dense_dir} has no config.json; give a transformers checkpoint directory.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RoutelensError(f"--out {out} exists and is not empty; choose another directory or pass --overwrite.")
    dense_config = AutoConfig.from_pretrained(dense_dir)
    _check_dense(dense_config, dense_dir)
    inter = dense_config.intermediate_size
    if cfg.mode is UpcycleMode.SPLIT:
        inter = split_size(inter, cfg.num_experts)  # checked before the weights are loaded

    with progress_bar(disable=not progress, transient=True) as bar:
        task = bar.add_task("upcycle", total=3, status="loading the dense model")
        dense = AutoModelForCausalLM.from_pretrained(dense_dir, dtype="auto")
        state = dense.state_dict()
        _refuse_biases(state, dense_dir)
        bar.update(task, advance=1, status="building experts")
        moe_config = mixtral_config(dense_config, cfg, inter)
        moe_state = upcycled_state_dict(state, dense_config.num_hidden_layers, cfg, dense_config.initializer_range)
        del dense, state
        with torch.device("meta"):  # no second copy of the weights: the new tensors are assigned
            moe = MixtralForCausalLM(moe_config)
        if moe_config.tie_word_embeddings:
            moe_state.pop("lm_head.weight", None)
        moe.load_state_dict(moe_state, strict=not moe_config.tie_word_embeddings, assign=True)
        if moe_config.tie_word_embeddings:
            moe.tie_weights()
        bar.update(task, advance=1, status="saving")
        with atomic_dir(out) as tmp, transformers_bars_off():  # `out` is replaced only once the new one is complete
            moe.save_pretrained(tmp)
            for name in TOKENIZER_FILES:
                if (dense_dir / name).is_file():
                    shutil.copy2(dense_dir / name, tmp / name)
            record = {"source": str(dense_dir), "source_model_type": dense_config.model_type, **cfg.to_json()}
            write_json(tmp / "upcycle.json", record, indent=2, newline=True, allow_nan=True, default=str)
        bar.update(task, advance=1, status="done")
    return out

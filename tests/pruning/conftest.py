"""Tiny models of the families pruning is tested on, saved with a tokenizer (never downloaded):
Mixtral (softmax, renormalised), OLMoE with norm_topk_prob (renormalised), Qwen2-MoE with a shared
expert (not renormalised), DeepSeek-V3 (sigmoid, score-correction bias, 2 groups, a dense first
layer, shared expert, renormalised)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import cli_model  # noqa: F401 - a micro model `routelens train` wrote (ablation tests)
from tests.conftest import build_tokenizer

_COMMON = dict(
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    vocab_size=300,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
)  # the ids of tests.conftest.build_tokenizer
CONFIGS = {
    "mixtral": (
        "MixtralConfig",
        dict(intermediate_size=64, num_hidden_layers=2, num_local_experts=8, num_experts_per_tok=2),
    ),
    "olmoe": (
        "OlmoeConfig",
        dict(intermediate_size=64, num_hidden_layers=2, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True),
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(
            intermediate_size=64,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=32,
            num_hidden_layers=2,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=False,
        ),
    ),
    "deepseek_v3": (
        "DeepseekV3Config",
        dict(
            intermediate_size=64,
            moe_intermediate_size=16,
            num_hidden_layers=3,
            first_k_dense_replace=1,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_group=2,
            topk_group=1,
            n_shared_experts=1,
            num_key_value_heads=4,
            q_lora_rank=16,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=8,
            v_head_dim=8,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
        ),
    ),
}
FAMILIES = list(CONFIGS)
RENORMALISED = ["mixtral", "olmoe", "deepseek_v3"]


def tiny_model(family: str, seed: int = 0):
    """The eval-mode float32 model, with router weights large enough for confident routing and
    non-zero selection biases (zero at initialisation, so slicing them would go untested)."""
    import torch
    import transformers

    cls_name, kwargs = CONFIGS[family]
    config = getattr(transformers, cls_name)(**{**_COMMON, **kwargs})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("e_score_correction_bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
            elif name.endswith(("mlp.gate.weight", "block_sparse_moe.gate.weight")):
                tensor.mul_(20.0)  # init std 0.02 routes almost uniformly; ties would make the test vacuous
    return model


def save_tiny(path: Path, family: str, seed: int = 0) -> Path:
    model = tiny_model(family, seed)
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def saved_family(tmp_path_factory):
    """`saved_family(name)`: directory of that tiny family's checkpoint, saved once per session."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = save_tiny(tmp_path_factory.mktemp("prune-models") / family, family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def traced_family(saved_family, tmp_path_factory):
    """`traced_family(name)`: (model dir, trace dir) of that family over two small domains."""
    import routelens
    from tests.conftest import SAMPLE_TEXT

    cache: dict[str, tuple[Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in cache:
            root = tmp_path_factory.mktemp(f"prune-trace-{family}")
            (root / "code.txt").write_text("\n\n".join(SAMPLE_TEXT[0::3] * 6))
            (root / "prose.txt").write_text("\n\n".join(SAMPLE_TEXT[1::3] * 6))
            model = saved_family(family)
            routelens.trace(
                model,
                [f"code={root / 'code.txt'}", f"prose={root / 'prose.txt'}"],
                root / "trace",
                seq_len=32,
                progress=False,
            )
            cache[family] = (model, root / "trace")
        return cache[family]

    return get

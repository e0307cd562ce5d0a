"""The MoE families of transformers routelens does not record, each with the reason: ONE place.

The conformance suite (tests/capture/test_conformance.py) checks every other MoE family of the
installed transformers on a tiny model, and fails when a family is neither exact nor listed
here, so this table and `routelens families` stay true across transformers upgrades.
"""

from __future__ import annotations

UNSUPPORTED: dict[str, str] = {
    "doge": "product-key retrieval experts: expert rows are embeddings looked up inside the block and the "
    "combination weights never reach an experts module; the router also mixes logits across tokens",
    "jetmoe": "experts are two grouped linears fed by a sorted dispatch (no experts(hidden, index, weights) "
    "call), and the attention routes too (mixture of attention heads) with the same router class",
    "nllb-moe": "encoder-decoder: routelens traces decoder-only language models over a corpus; its experts "
    "get a (tokens, E) top-2 dispatch mask under a capacity limit, not (tokens, k) indices",
    "switch_transformers": "encoder-decoder: routelens traces decoder-only language models over a corpus; its "
    "experts get a (tokens, E) top-1 dispatch mask under a capacity limit, not (tokens, k) indices",
}


def why_unsupported(model_type: str) -> str | None:
    """The reason routelens does not record `model_type`, or None when it does (or is not MoE)."""
    return UNSUPPORTED.get(model_type)

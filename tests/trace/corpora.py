"""Small corpora and an independent ground truth for the trace tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DOCS = [
    "short one",
    "The router sends each token to two of eight experts, and their outputs are combined by weight.",
    "def f(x):\n    return x * 2\n\nprint(f(3))",
    "a",
    "Question: Solve 2*x + 3 = 11 for x. Answer: 4. " * 3,
]


def write_txt(path: Path, docs) -> str:
    path.write_text("\n\n".join(d.replace("\n\n", "\n") for d in docs) + "\n")
    return str(path)


def forward_pre_inputs(model, window_ids, module_of, take) -> list:
    """Run one window through `model` and return `take(args)` of every call of `module_of(layer)`
    (one module per decoder layer), in call order: an independent ground truth for the tests."""
    seen = []
    handles = [
        module_of(layer).register_forward_pre_hook(lambda m, args: seen.append(take(args)))
        for layer in model.model.layers
    ]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([window_ids]))
    finally:
        for h in handles:
            h.remove()
    return seen


def experts_inputs(model, window_ids):
    """Independent ground truth: the (indices, weights) each layer's experts module received."""
    seen = forward_pre_inputs(
        model, window_ids, lambda layer: layer.mlp.experts, lambda args: (args[1].clone(), args[2].clone())
    )
    return np.stack([s[0].numpy() for s in seen], 1), np.stack([s[1].float().numpy() for s in seen], 1)

"""The language-model loss of a model over token windows: the one next-token NLL that `routelens
eval`, training's validation, expert ablation and pruning all report, so their numbers compare."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()  # a number to report: nothing backpropagates through it, so no graph is kept
def window_nll(
    model, windows: np.ndarray, batch_size: int, pad_id: int, per_window: list[np.ndarray] | None = None
) -> tuple[float, int]:
    """(sum of next-token NLL, number of predicted tokens) over (n, seq_len) windows; -1 = padding.
    With `per_window`, appends each batch's (b, 2) array of [NLL sum, tokens] per window to it
    (the units a standard error over windows needs)."""
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        ids = torch.from_numpy(windows[start : start + batch_size].astype(np.int64))  # (b, S)
        valid = ids >= 0
        logits = model(input_ids=ids.masked_fill(~valid, pad_id), use_cache=False).logits  # (b, S, V)
        targets = ids[:, 1:].masked_fill(~valid[:, 1:], -100)
        flat_logits, flat_targets = logits[:, :-1].flatten(0, 1).float(), targets.flatten()
        total += F.cross_entropy(flat_logits, flat_targets, ignore_index=-100, reduction="sum").item()
        count += int((targets != -100).sum())
        if per_window is not None:
            rows = F.cross_entropy(flat_logits, flat_targets, ignore_index=-100, reduction="none").view(targets.shape)
            per_window.append(np.stack([rows.sum(1).double().numpy(), (targets != -100).sum(1).numpy()], axis=1))
    return total, count

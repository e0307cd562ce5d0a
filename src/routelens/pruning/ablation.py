"""`ablate()`: held-out loss per domain with given experts removed, beside the intact model's.

The experts are removed from the loaded model (`surgery.remove_experts`), so each router chooses
among the rest by its family's own rule: for softmax routers exactly the choice with the removed
experts' logits at -inf; sigmoid and biased routers simply never see them. Layers may lose
different experts. Held-out text is what `routelens train` held out (rebuilt from training.json's
seed and val_tokens, as `routing_health` does) where the model has a training.json, else the whole
corpus; the loss is `models.loss.window_nll`, the one `routelens eval` computes.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routelens.config import build_config
from routelens.corpus import CorpusSpec
from routelens.errors import RoutelensError
from routelens.pruning.configs import AblateConfig


def eval_windows(
    tokenizer,
    corpus_specs: Sequence[str | CorpusSpec],
    meta: dict,
    *,
    seq_len: int | None = None,
    max_tokens: int | None = None,
    held_out: bool = True,
) -> tuple[dict[str, np.ndarray], int, bool]:
    """({domain: (n, seq_len) windows, -1 = padding}, seq_len, whether they are the held-out split)."""
    from routelens.corpus.windows import encode_documents, held_out_windows, read_corpora, windows_of

    trained = meta.get("config", {})
    seq_len = seq_len or int(trained.get("seq_len", 128))
    corpora = read_corpora(corpus_specs, min_docs=1)
    encoded = {d: encode_documents(tokenizer, corpora.documents[d]) for d in corpora.domains}
    use_split = held_out and "seed" in trained and "val_tokens" in trained
    if use_split:
        windows = held_out_windows(encoded, seq_len, int(trained["seed"]), int(trained["val_tokens"]))
    else:
        windows = {d: windows_of(np.concatenate(docs), seq_len, pad_last=True) for d, docs in encoded.items()}
    if max_tokens is not None:
        windows = {d: w[: max(1, -(-max_tokens // seq_len))] for d, w in windows.items()}
    return windows, seq_len, use_split


def domain_losses(
    model, windows: dict[str, np.ndarray], batch_size: int, pad_id: int, per_window: dict[str, list] | None = None
) -> dict:
    """{"loss", "perplexity", "domains": {name: {tokens, loss, perplexity}}} of `model` on the windows;
    with `per_window`, also its [NLL sum, tokens] per window under each domain's name."""
    from routelens.models.loss import window_nll

    domains, total, count = {}, 0.0, 0
    for name, win in windows.items():
        nll, n = window_nll(
            model, win, batch_size, pad_id, None if per_window is None else per_window.setdefault(name, [])
        )
        if n == 0:
            raise RoutelensError(f"corpus {name!r} holds no text to predict; give it at least two tokens of text.")
        domains[name] = {"tokens": n, "loss": nll / n, "perplexity": float(np.exp(nll / n))}
        total, count = total + nll, count + n
    return {"loss": total / count, "perplexity": float(np.exp(total / count)), "domains": domains}


def without_experts(model, removed: dict[int, list[int]]):
    """A copy of `model` with the experts `removed[layer]` taken out of each listed MoE layer."""
    from routelens.models.families import find_routers
    from routelens.pruning.surgery import remove_experts

    sizes = {s.layer: s.num_experts for s in find_routers(model)}
    unknown = sorted(set(removed) - set(sizes))
    if unknown:
        raise RoutelensError(
            f"--expert {unknown[0]}:...: layer {unknown[0]} is not a MoE layer; the MoE layers are {', '.join(map(str, sizes))}."
        )
    for layer, ids in removed.items():
        bad = [e for e in ids if not 0 <= e < sizes[layer]]
        if bad:
            raise RoutelensError(f"--expert {layer}:{bad[0]}: layer {layer} has experts 0..{sizes[layer] - 1}.")
    pruned = copy.deepcopy(model)
    remove_experts(pruned, {layer: [e for e in range(sizes[layer]) if e not in ids] for layer, ids in removed.items()})
    return pruned


def ablate(
    model: str | os.PathLike, corpus_specs: Sequence[str | CorpusSpec], config: AblateConfig | None = None, **overrides
) -> dict:
    """Held-out loss per domain of `model` intact and with `config.experts` removed; keyword
    overrides set AblateConfig fields, e.g. `ablate("moe/", ["code=code.txt"], experts=["0:3", "2:1,5"])`.

    Keys: model, removed ({layer: ids}), seq_len, held_out, intact and ablated (each loss,
    perplexity, domains), delta (ablated - intact: loss, domains).
    """
    from routelens.models.loading import load_model
    from routelens.trace.config import TraceConfig

    config = build_config(AblateConfig, config, overrides)
    removed = config.removed
    if not removed:
        raise RoutelensError("no expert to remove; pass --expert LAYER:EXPERT (e.g. --expert 0:3), repeatable.")
    # the trace stage's loader: one-line errors and no loading bars; float32 as `routelens eval` scores
    hf_model, tokenizer = load_model(model, TraceConfig(dtype="float32", progress=False))
    training = Path(model) / "training.json"
    meta = json.loads(training.read_text()) if training.is_file() else {}
    ablated_model = without_experts(hf_model, removed)  # refuses bad ids before any text is read
    windows, seq_len, held = eval_windows(
        tokenizer, corpus_specs, meta, seq_len=config.seq_len, max_tokens=config.max_tokens, held_out=config.held_out
    )
    pad_id = tokenizer.pad_token_id or 0
    intact = domain_losses(hf_model, windows, config.batch_size, pad_id)
    ablated = domain_losses(ablated_model, windows, config.batch_size, pad_id)
    delta = {
        "loss": ablated["loss"] - intact["loss"],
        "domains": {d: ablated["domains"][d]["loss"] - intact["domains"][d]["loss"] for d in windows},
    }
    return {
        "model": str(Path(model)),
        "removed": {str(layer): ids for layer, ids in removed.items()},
        "seq_len": seq_len,
        "held_out": held,
        "intact": intact,
        "ablated": ablated,
        "delta": delta,
    }

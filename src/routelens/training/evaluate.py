"""Evaluating a trained MoE: loss and perplexity per domain (optionally under an expert capacity or
another top-k), the unigram baseline it must beat, and the health of its routing.

`evaluate` backs `routelens eval`; `routing_health` answers "did training give balanced and
informative routing?" on held-out text: the largest expert's share of assignments over the
uniform share k/E... per layer (balanced: <= 2), and how often consecutive tokens keep the same
first expert (informative: >= 2/E somewhere, twice the rate of random routing).

Both work on every MoE family routelens records: E, k and the MoE layers come from
`describe_model`, and the routing is read where the experts receive it (`RoutingRecorder`'s
forward pre-hooks on the experts modules), first choice first whatever order the router used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from routelens.config import build_config
from routelens.corpus import CorpusSpec
from routelens.corpus.windows import encode_documents, held_out_windows, read_corpora, windows_of
from routelens.errors import RoutelensError
from routelens.models.families import describe_model
from routelens.models.loss import window_nll
from routelens.training.capacity import apply_capacity
from routelens.training.configs import EvalConfig


# ---- pure metrics -------------------------------------------------------------------------------
def unigram_loss(train_counts: np.ndarray, targets: np.ndarray) -> float:
    """Cross-entropy (nats) of an add-one smoothed unigram model fitted on `train_counts` (vocab,)."""
    probs = (train_counts + 1.0) / (train_counts.sum() + len(train_counts))
    return float(-np.log(probs[targets]).mean())


def max_load_ratio(top_k_index: np.ndarray, num_experts: int) -> np.ndarray:
    """(tokens, layers, k) expert ids -> (layers,) largest expert's share of assignments / (1/E).
    Ids >= E (empty slots, zero-computation experts) are not assignments to a routed expert."""
    layers = top_k_index.shape[1]
    per_layer = [top_k_index[:, layer].ravel() for layer in range(layers)]
    counts = np.stack([np.bincount(ids[ids < num_experts], minlength=num_experts) for ids in per_layer])
    return counts.max(axis=1) / np.maximum(counts.sum(axis=1), 1) * num_experts


def first_expert_repeat_rate(first: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(seqs, positions, layers) first-choice ids and (seqs, positions) validity -> (layers,) share of
    consecutive valid token pairs whose first expert is the same."""
    pair_ok = valid[:, 1:] & valid[:, :-1]  # (seqs, positions-1)
    same = first[:, 1:] == first[:, :-1]  # (seqs, positions-1, layers)
    return (same & pair_ok[..., None]).sum(axis=(0, 1)) / max(int(pair_ok.sum()), 1)


# ---- model helpers ------------------------------------------------------------------------------
def load_model_dir(model_dir: str | Path):
    """(model, tokenizer, training.json dict or {}) of a directory written by `routelens train`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise RoutelensError(
            f"{path} holds no config.json; pass a model directory (e.g. one written by `routelens train`)."
        )
    from routelens.models.loading import load_or_refuse  # one line, not a traceback, for a damaged folder

    model = load_or_refuse(str(path), lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)).eval()
    tokenizer = load_or_refuse(str(path), lambda: AutoTokenizer.from_pretrained(path))
    meta = json.loads((path / "training.json").read_text()) if (path / "training.json").is_file() else {}
    return model, tokenizer, meta


@torch.no_grad()
@contextmanager
def record_routing(model) -> Iterator[list[list[torch.Tensor]]]:
    """Collect the top-k index the experts of each MoE layer received, first choice first:
    out[layer] = [(tokens, k), ...], filled when the `with` ends (the recorder's `take`)."""
    from routelens.capture.recorder import RoutingRecorder

    recorder = RoutingRecorder(model)
    out: list[list[torch.Tensor]] = [[] for _ in recorder.spec.moe_layers]
    with recorder:
        yield out
        experts = recorder.take().experts  # (tokens, layers, k)
    for slot, index in enumerate(experts.unbind(1)):
        out[slot].append(index)


# ---- evaluation ---------------------------------------------------------------------------------
def evaluate(
    model_dir: str | Path, corpus_specs: Sequence[str | CorpusSpec], config: EvalConfig | None = None, **overrides
) -> dict:
    """Loss and perplexity per corpus, and the share of assignments dropped per MoE layer; keyword
    overrides set EvalConfig fields, e.g. `evaluate("moe/", specs, capacity_factor=1.0, top_k=1)`."""
    from routelens.progress import progress_bar

    config = build_config(EvalConfig, config, overrides)
    model, tokenizer, meta = load_model_dir(model_dir)
    spec = describe_model(model)  # E and k of any family routelens records; refuses others in one line
    seq_len = config.seq_len or int(meta.get("config", {}).get("seq_len", 128))
    # ~16 characters per token bounds what must be read and tokenized for max_tokens
    corpora = read_corpora(
        corpus_specs, min_docs=1, max_chars=None if config.max_tokens is None else 16 * config.max_tokens
    )
    domains, total_nll, total_n = {}, 0.0, 0
    with apply_capacity(model, config.capacity_factor, config.top_k) as stats, progress_bar(not config.progress) as bar:
        task = bar.add_task("eval", total=len(corpora.domains), status="")
        for name in corpora.domains:
            stream = np.concatenate(encode_documents(tokenizer, corpora.documents[name]))
            if config.max_tokens is not None:
                stream = stream[: config.max_tokens]
            nll, n = window_nll(
                model, windows_of(stream, seq_len, pad_last=True), config.batch_size, tokenizer.pad_token_id or 0
            )
            if n == 0:
                raise RoutelensError(f"corpus {name!r} holds no text to predict; give it at least two tokens of text.")
            domains[name] = {"tokens": n, "loss": nll / n, "perplexity": float(np.exp(nll / n))}
            total_nll, total_n = total_nll + nll, total_n + n
            bar.update(task, advance=1, status=f"{name}: loss {nll / n:.3f}")
    return {
        "model": str(model_dir),
        "capacity_factor": config.capacity_factor,
        "top_k": config.top_k or spec.top_k,
        "num_experts": spec.num_experts,
        "seq_len": seq_len,
        "batch_size": config.batch_size,
        "loss": total_nll / total_n,
        "perplexity": float(np.exp(total_nll / total_n)),
        "domains": domains,
        "moe_layers": stats.layers,
        "dropped_share": stats.dropped_share().tolist(),
        "fully_dropped_share": stats.fully_dropped_share().tolist(),
    }


@torch.no_grad()
def routing_health(
    model_dir: str | Path, corpus_specs: Sequence[str | CorpusSpec], *, max_tokens: int = 50_000, batch_size: int = 32
) -> dict:
    """Balance and informativeness of the routing on held-out text (the documents `train` held out,
    rebuilt from `training.json`; all documents for a model without one), pooled over corpora.

    Keys: layers, num_experts, top_k, tokens, max_load_ratio (per layer: largest expert's share /
    uniform share), max_load_ratio_per_domain, first_repeat_rate (per layer), random_repeat_rate
    (1/E), balanced (every layer <= 2), informative (some layer >= 2/E).
    """
    model, tokenizer, meta = load_model_dir(model_dir)
    seq_len = int(meta.get("config", {}).get("seq_len", 128))
    corpora = read_corpora(corpus_specs, min_docs=1)
    encoded = {d: encode_documents(tokenizer, corpora.documents[d]) for d in corpora.domains}
    if meta:
        windows = held_out_windows(encoded, seq_len, int(meta["config"]["seed"]), int(meta["config"]["val_tokens"]))
    else:
        windows = {d: windows_of(np.concatenate(docs), seq_len, pad_last=True) for d, docs in encoded.items()}
    spec = describe_model(model)
    E, k = spec.num_experts, spec.top_k
    firsts, valids, per_domain, all_idx = [], [], {}, []
    for domain, win in windows.items():
        win = win[: max(1, max_tokens // seq_len)]
        with record_routing(model) as routed:
            for start in range(0, len(win), batch_size):
                ids = torch.from_numpy(win[start : start + batch_size].astype(np.int64))
                model(input_ids=ids.clamp(min=0), use_cache=False)
        idx = np.stack([torch.cat(r).numpy() for r in routed], axis=1)  # (windows*S, layers, k)
        valid = (win >= 0).reshape(-1)
        per_domain[domain] = max_load_ratio(idx[valid], E).tolist()
        all_idx.append(idx[valid])
        firsts.append(idx[:, :, 0].reshape(len(win), seq_len, -1))
        valids.append(win >= 0)
    idx = np.concatenate(all_idx)
    load = max_load_ratio(idx, E)
    repeat = first_expert_repeat_rate(np.concatenate(firsts), np.concatenate(valids))
    return {
        "layers": list(spec.moe_layers),
        "num_experts": E,
        "top_k": k,
        "tokens": int(len(idx)),
        "max_load_ratio": load.tolist(),
        "max_load_ratio_per_domain": per_domain,
        "first_repeat_rate": repeat.tolist(),
        "random_repeat_rate": 1.0 / E,
        "balanced": bool((load <= 2.0).all()),
        "informative": bool((repeat >= 2.0 / E).any()),
    }

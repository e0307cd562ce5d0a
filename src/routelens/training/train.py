"""Training a MoE from scratch (or from an upcycled checkpoint) on corpora: Mixtral-, OLMoE-,
Qwen3-MoE- or DeepSeek-V3-shaped (`--architecture`, see `routelens.models.architectures`).

The output directory is a standard transformers checkpoint (e.g. `MixtralForCausalLM`) plus its
byte-level BPE tokenizer (`AutoModelForCausalLM` / `AutoTokenizer` load it), `training.json` (config, steps,
tokens, wall time, final loss, held-out loss per domain beside a unigram model's), and
`checkpoints/step-XXXXXX/`: full checkpoints every `checkpoint_every` steps, kept for
router-saturation analyses. The latest one also holds `optimizer.pt` and `trainer_state.pt`, so
running the same command again after a kill continues where it stopped; the batch order is a pure
function of (seed, step), and the trainer state holds the RNG and the window of recent losses, so an
interrupted-and-resumed run writes the same `training.json` as an uninterrupted one (but for its
wall-clock fields, `WALL_CLOCK_FIELDS`).

A checkpoint folder is input like any other (it may come from someone else), so it is never
unpickled: both files hold only tensors and plain values and are read with `weights_only=True`,
which refuses any other object (a crafted pickle that would run code is refused in one line).

Load balancing: tiny MoEs collapse onto a few experts unless pushed. transformers'
`load_balancing_loss_func` pools the tokens of all layers before measuring balance, which lets one
layer concentrate while another compensates; we apply the Switch loss E * sum_e f_e P_e to each
layer and sum over layers (`BalanceLoss.PER_LAYER`), with f_e counted from the experts each layer
was really given, plus the ST-MoE router z-loss on softmax routers. DeepSeek-V3-shaped models also
move their selection biases toward balance after every step (`architectures.update_selection_bias`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from routelens.atomic import atomic_dir, temp_dir, write_json
from routelens.config import build_config
from routelens.corpus import CorpusSpec
from routelens.errors import RoutelensError
from routelens.models.architectures import Architecture, model_config, parse_architecture, update_selection_bias
from routelens.models.loss import window_nll
from routelens.progress import transformers_bars_off
from routelens.training.capacity import apply_capacity
from routelens.training.configs import DEMO_CONFIG, BalanceLoss, TrainConfig, current_names
from routelens.training.evaluate import routing_health, unigram_loss
from routelens.training.tokenizer import train_tokenizer
from routelens.training.train_data import build_train_data, read_corpora

__all__ = ["DEMO_CONFIG", "BalanceLoss", "TrainConfig", "balance_loss", "router_z_loss", "routing_health", "train"]

# The fields of training.json that measure time, so differ between two runs of the same training.
WALL_CLOCK_FIELDS = ("train_seconds", "wall_seconds", "tokens_per_second")
RECENT_LOSSES = 20  # the window of the progress bar's loss; its last 10 give final_loss
STATE_KEYS = ("step", "tokens", "elapsed_s", "history", "config", "torch_rng")


# ---- losses (pure) ------------------------------------------------------------------------------
def balance_loss(
    router_logits: Sequence[torch.Tensor],
    top_k: int,
    mode: BalanceLoss = BalanceLoss.PER_LAYER,
    *,
    sigmoid: bool = False,
    chosen: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Switch-Transformer balance loss E * sum_e f_e * P_e from per-layer (tokens, E) router logits.

    f_e: share of the top-k assignments given to expert e (from `chosen[layer]`, the (tokens, k)
    ids the experts were given, else the top-k of the probabilities); P_e: mean router probability
    of e (softmax, or for a sigmoid router the scores normalised over experts). Both uniform gives 1
    per layer. PER_LAYER sums the per-layer losses; POOLED measures f and P over all layers' tokens
    together (transformers' definition, divided by k) and returns one value.
    """
    from routelens.models.architectures import router_probs

    E = router_logits[0].shape[-1]
    per_layer_f, per_layer_p = [], []
    for layer, logits in enumerate(router_logits):
        probs = router_probs(logits, sigmoid)  # (tokens, E)
        if chosen is None:
            picked = torch.topk(probs, top_k, dim=-1).indices  # (tokens, k)
        else:
            picked = chosen[layer].reshape(len(probs), -1).long()
        f = torch.zeros(E, device=probs.device).scatter_add_(
            0, picked.reshape(-1), torch.ones(picked.numel(), device=probs.device)
        )
        per_layer_f.append(f / picked.numel())
        per_layer_p.append(probs.mean(0))
    f, p = torch.stack(per_layer_f), torch.stack(per_layer_p)  # (layers, E)
    if BalanceLoss(mode) is BalanceLoss.POOLED:
        return E * (f.mean(0) * p.mean(0)).sum()
    return E * (f * p).sum()


def router_z_loss(router_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2, summed over layers."""
    return sum(torch.logsumexp(logits.float(), dim=-1).pow(2).mean() for logits in router_logits)


def lr_at(config: TrainConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up, then cosine decay to lr/10 over the steps (or the minutes when no step cap)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.steps is not None:
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    else:
        progress = elapsed_s / (config.minutes * 60)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---- model and checkpoints ----------------------------------------------------------------------
def build_model(config: TrainConfig, tokenizer):
    """A freshly initialised model of `config.architecture` (seeded by `config.seed`)."""
    import transformers

    mc = model_config(config, tokenizer)
    torch.manual_seed(config.seed)
    return getattr(transformers, parse_architecture(config.architecture).model_class)(mc)


def _load_pretrained(path: Path, what: str, architecture: Architecture = Architecture.MIXTRAL):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wanted = architecture.model_class
    if not (path / "config.json").is_file():
        raise RoutelensError(f"{what} {path} holds no config.json; pass a {wanted} directory.")
    from routelens.models.loading import load_or_refuse

    model = load_or_refuse(f"{what} {path}", lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32))
    if type(model).__name__ != wanted:
        found = Architecture.of_class(type(model).__name__)
        hint = f"pass --architecture {found}" if found else "see `routelens upcycle` for a Mixtral one"
        raise RoutelensError(
            f"{what} {path} is a {type(model).__name__}; --architecture {architecture} trains a {wanted} ({hint})."
        )
    try:
        with transformers_bars_off():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        raise RoutelensError(f"{what} {path} has no tokenizer files; save the tokenizer beside the model.") from None
    return model, tokenizer


def _latest_checkpoint(root: Path) -> Path | None:
    done = sorted(
        p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp") and (p / "optimizer.pt").is_file()
    )
    return done[-1] if done else None


def _save_pretrained(model, tokenizer, path: Path) -> None:
    with transformers_bars_off():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)


def _save_checkpoint(root: Path, model, tokenizer, optimizer, state: dict, keep: int) -> Path:
    final = root / f"step-{state['step']:06d}"
    with atomic_dir(final) as tmp:  # a killed save leaves the previous checkpoint, never half of one
        _save_pretrained(model, tokenizer, tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(state, tmp / "trainer_state.pt")
    older = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final and not p.name.endswith(".tmp"))
    for p in older:  # resuming needs only the newest optimizer state
        (p / "optimizer.pt").unlink(missing_ok=True)
    if keep > 0:
        for p in (older + [final])[:-keep]:
            shutil.rmtree(p)
    return final


def load_safely(path: Path, what: str):
    """`torch.load(path, weights_only=True)`: tensors and plain values only, never code; a file that
    needs more (a crafted pickle), or a corrupt one, is refused in one line."""
    import pickle
    import zipfile

    try:
        with warnings.catch_warnings():  # a foreign pickle protocol is refused below, not warned about
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        zipfile.BadZipFile,
        AttributeError,
    ) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise RoutelensError(
            f"{what} {path} cannot be read as tensors and plain values ({first}); it was not written by routelens "
            f"train or is damaged: delete {path.parent} to resume from the checkpoint before it, or pick another --out."
        ) from None


def _load_state(resume: Path) -> dict:
    state = load_safely(resume / "trainer_state.pt", "the trainer state")
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state["torch_rng"], torch.Tensor) or not isinstance(state["config"], dict):
        raise RoutelensError(
            f"the trainer state {resume / 'trainer_state.pt'} lacks {', '.join(missing) or 'a valid torch_rng/config'}; "
            f"delete {resume} to resume from the checkpoint before it, or pick another --out."
        )
    return state


def _check_same_run(saved: dict, config: TrainConfig, where: Path) -> None:
    diff, saved = config.differences(saved), current_names(saved)
    if diff:
        raise RoutelensError(
            f"{where} was trained with other settings ({', '.join(f'{k}={saved.get(k)!r}' for k in diff)}); "
            "re-run with the same options to resume, or pick another --out."
        )


# ---- the loop -----------------------------------------------------------------------------------
def train(
    corpus_specs: Sequence[str | CorpusSpec],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    progress: bool = True,
    **overrides,
) -> Path:
    """Train (or resume, or return the finished) model in `out_dir`; returns `out_dir`. Keyword
    overrides set TrainConfig fields, e.g. `train(specs, "moe/", num_experts=4, steps=100)`.

    `out_dir` is locked for the run (`routelens.lock`): a second run into it, from this process or
    another, is refused in one line instead of interleaving its checkpoints."""
    from routelens.lock import output_lock

    config = build_config(TrainConfig, config, overrides)
    with output_lock(out_dir, what="train"):
        return _train(corpus_specs, Path(out_dir), config, progress)


def _train(corpus_specs: Sequence[str | CorpusSpec], out: Path, config: TrainConfig, progress: bool) -> Path:
    """The body of `train`, run with `out` locked."""
    from routelens.progress import progress_bar

    if (out / "training.json").is_file():
        _check_same_run(json.loads((out / "training.json").read_text())["config"], config, out)
        return out
    ckpt_root = out / "checkpoints"
    if out.exists() and any(out.iterdir()) and not ckpt_root.is_dir():
        raise RoutelensError(f"{out} is not empty and holds no training run; pick an empty or new --out.")
    t_start = time.perf_counter()
    corpora = read_corpora(corpus_specs)
    resume = _latest_checkpoint(ckpt_root) if ckpt_root.is_dir() else None
    if resume is not None:
        state = _load_state(resume)
        optimizer_state = load_safely(resume / "optimizer.pt", "the optimizer state")  # refused before the model loads
        _check_same_run(state["config"], config, out)
        model, tokenizer = _load_pretrained(resume, "checkpoint", config.architecture)
    else:
        state = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "history": []}
        if config.init:
            model, tokenizer = _load_pretrained(Path(config.init), "--init", config.architecture)
        else:
            tokenizer = train_tokenizer(corpora.interleaved(), config.vocab_size)
            model = build_model(config, tokenizer)
    state["config"] = config.identity()
    data = build_train_data(
        corpora,
        tokenizer,
        seq_len=config.seq_len,
        seed=config.seed,
        val_tokens=config.val_tokens,
        vocab_size=len(tokenizer),
    )
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    if resume is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
            torch.set_rng_state(state["torch_rng"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise RoutelensError(
                f"the optimizer or RNG state in {resume} does not fit this model ({exc}); "
                f"delete {resume} to resume from the checkpoint before it, or pick another --out."
            ) from None
    ckpt_root.mkdir(parents=True, exist_ok=True)
    from routelens.capture import RoutingRecorder
    from routelens.models.families import find_routers

    k = model.config.num_experts_per_tok
    sites = find_routers(model)
    sigmoid = config.architecture.sigmoid
    bias_rate = config.resolved_bias_update_rate
    steps_cap = config.steps if config.steps is not None else 1 << 40
    run_start, elapsed_before = time.perf_counter(), state["elapsed_s"]
    recent: list[float] = [
        float(x) for x in state.get("recent", [])
    ]  # carried over a resume, so final_loss is the same
    run_tokens = 0
    model.train()
    capacity = apply_capacity(model, config.capacity_factor) if config.capacity_factor is not None else nullcontext()
    with capacity, RoutingRecorder(model) as recorder, progress_bar(not progress) as bar:
        task = bar.add_task("train", total=config.steps, completed=state["step"], status="")
        while state["step"] < steps_cap:
            elapsed = elapsed_before + time.perf_counter() - run_start
            if config.minutes is not None and elapsed >= config.minutes * 60:
                break
            step = state["step"]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step, elapsed)
            windows, epoch, offset = data.batch(step, config.batch_size)
            ids = torch.from_numpy(windows.astype(np.int64))  # (B, S)
            out_ = model(input_ids=ids, output_router_logits=True, use_cache=False)
            ce = F.cross_entropy(out_.logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            given = recorder.take().experts.unbind(1)  # per MoE layer (tokens, k): what the experts received
            bal = balance_loss(out_.router_logits, k, config.balance, sigmoid=sigmoid, chosen=given)
            z = torch.zeros(()) if sigmoid else router_z_loss(out_.router_logits)  # z-loss: softmax routers only
            loss = ce + config.aux_loss_coef * bal + config.z_loss_coef * z
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bal, z = bal.detach(), z.detach()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if bias_rate:
                update_selection_bias(sites, given, bias_rate)
            state["step"], state["tokens"] = step + 1, state["tokens"] + ids.numel()
            state["data_position"] = {"epoch": epoch, "window": offset + config.batch_size}
            recent = (recent + [ce.item()])[-RECENT_LOSSES:]
            state["history"].append({"step": step + 1, "loss": recent[-1], "balance": bal.item(), "z": z.item()})
            run_tokens += ids.numel()
            rate = run_tokens / max(time.perf_counter() - run_start, 1e-9)
            bar.update(task, completed=step + 1, status=f"loss {np.mean(recent):.3f}  {rate / 1000:.1f}k tok/s")
            last = state["step"] >= steps_cap
            if state["step"] % config.checkpoint_every == 0 or last:
                state["elapsed_s"] = elapsed_before + time.perf_counter() - run_start
                state["torch_rng"], state["recent"] = torch.get_rng_state(), list(recent)
                _save_checkpoint(ckpt_root, model, tokenizer, optimizer, state, config.keep_checkpoints)
    state["elapsed_s"] = elapsed_before + time.perf_counter() - run_start
    if config.steps is None or state["step"] < steps_cap:  # stopped by the clock: keep the last step too
        state["torch_rng"], state["recent"] = torch.get_rng_state(), list(recent)
        _save_checkpoint(ckpt_root, model, tokenizer, optimizer, state, config.keep_checkpoints)
    return _finish(out, model, tokenizer, data, config, state, recent, t_start)


def _finish(
    out: Path, model, tokenizer, data, config: TrainConfig, state: dict, recent: list[float], t_start: float
) -> Path:
    """Held-out losses, the final checkpoint at the top of `out`, then `training.json` (written last)."""
    model.eval()
    pooled = sum(data.unigram_counts.values())
    val = {}
    for domain, windows in data.val.items():
        nll, n = window_nll(model, windows, config.batch_size, tokenizer.pad_token_id or 0)
        targets = windows[:, 1:][windows[:, 1:] >= 0]
        val[domain] = {
            "tokens": n,
            "loss": nll / n,
            "unigram_loss": unigram_loss(pooled, targets),
            "domain_unigram_loss": unigram_loss(data.unigram_counts[domain], targets),
        }
    with temp_dir(out, "final", hidden=True) as tmp:
        _save_pretrained(model, tokenizer, tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {
        "config": config.to_json(),
        "model": {"architecture": type(model).__name__, "parameters": n_params, "vocab_size": len(tokenizer)},
        "steps": state["step"],
        "tokens": state["tokens"],
        "train_tokens_per_domain": data.train_tokens,
        "train_seconds": state["elapsed_s"],
        "wall_seconds": time.perf_counter() - t_start,
        "tokens_per_second": state["tokens"] / max(state["elapsed_s"], 1e-9),
        "final_loss": float(np.mean(recent[-10:])) if recent else (state["history"] or [{"loss": None}])[-1]["loss"],
        "val": val,
        "history": state["history"],
        "checkpoints": sorted(p.name for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".tmp")),
    }
    # A diverged run's NaN losses are written as before (Python reads them back) rather than lost.
    write_json(out / "training.json", meta, indent=2, allow_nan=True)
    return out

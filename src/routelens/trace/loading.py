"""The one loader of models and tokenizers for tracing, in this process and in Ray actors.

    load_model(name, config)     -> (model in eval mode, tokenizer): on `config.device`, or spread
                                    by accelerate over GPUs, CPU memory and disk (`device_map`)
    load_skeleton(name, config)  -> (model on the meta device, tokenizer): the structure only, for a
                                    Ray driver that describes the routing but never computes
    load_tokenizer(name, config) -> tokenizer (the Ray planner tokenizes without a model)

Every failure becomes one `RoutelensError` line: a missing folder, a model transformers cannot
load, and a model that ships its own code while `--trust-remote-code` is off (transformers'
paragraph about it becomes one line saying what the flag would do).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from routelens.errors import RoutelensError
from routelens.trace.config import TraceConfig

T = TypeVar("T")


def load_model(model: str | os.PathLike, config: TraceConfig):
    """AutoModelForCausalLM + AutoTokenizer from a local directory or hub id, in eval mode."""
    from transformers import AutoModelForCausalLM

    name = _checked_name(model)
    kwargs = _dtype_kwargs(config)
    if config.device_map is not None:
        # accelerate places each module (and hooks it to move activations between devices);
        # weights that fit no device live in offload_folder and are read back layer by layer.
        kwargs.update(device_map=str(config.device_map), max_memory=config.max_memory, offload_folder=config.offload_folder)
    tokenizer = load_tokenizer(name, config)
    hf_model = _loading(name, config, lambda: AutoModelForCausalLM.from_pretrained(
        name, trust_remote_code=config.trust_remote_code, **kwargs))  # fmt: skip
    if config.device_map is None:
        hf_model = hf_model.to(config.device)
    return hf_model.eval(), tokenizer


def load_skeleton(model: str | os.PathLike, config: TraceConfig):
    """The model's modules on the meta device (no weights) and its tokenizer.

    A Ray driver only describes the routing and writes the manifest; the weights live in the
    actors, so a model larger than the driver's memory can still be traced.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    name = _checked_name(model)
    tokenizer = load_tokenizer(name, config)
    hf_config = _loading(name, config, lambda: AutoConfig.from_pretrained(name, trust_remote_code=config.trust_remote_code))
    dtype = _dtype_kwargs(config).get("dtype") or getattr(hf_config, "dtype", None) or torch.float32

    def build():
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config, dtype=dtype, trust_remote_code=config.trust_remote_code)

    return _loading(name, config, build).eval(), tokenizer


def load_tokenizer(model: str | os.PathLike, config: TraceConfig):
    from transformers import AutoTokenizer

    name = _checked_name(model)
    return _loading(name, config, lambda: AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code))


def input_device(model, config: TraceConfig):
    """Where a batch's input_ids go: `config.device`, or with a device map the device of the
    first weights held in memory (the embeddings; accelerate's hooks move everything after)."""
    import torch

    if config.device_map is None:
        return torch.device(config.device)
    for param in model.parameters():
        if param.device.type != "meta":  # offloaded weights sit on meta until their layer runs
            return param.device
    return torch.device("cpu")


def _checked_name(model: str | os.PathLike) -> str:
    name = str(model)
    if (Path(name).exists() or name.startswith((".", "/", "~"))) and not (Path(name) / "config.json").is_file():
        raise RoutelensError(f"no model at {name} (no config.json); give a model directory or a hub id.")
    return name


def _dtype_kwargs(config: TraceConfig) -> dict:
    import torch

    return {} if config.dtype == "auto" else {"dtype": getattr(torch, config.dtype)}


def _loading(name: str, config: TraceConfig, load: Callable[[], T]) -> T:
    """Run one transformers load with its progress bars off and its errors as one line."""
    with _transformers_quiet():
        try:
            return load()
        except (OSError, ValueError, KeyError, ImportError) as exc:
            text = str(exc).strip()
            if "trust_remote_code" in text and not config.trust_remote_code:
                raise RoutelensError(
                    f"model {name!r} ships its own modelling code (auto_map in its config.json); pass "
                    "--trust-remote-code to load it, which runs that Python code from the model folder "
                    "on this machine: only for a model whose source you trust."
                ) from None
            first = text.splitlines()[0] if text else type(exc).__name__
            raise RoutelensError(f"could not load model {name!r}: {first}") from None


@contextmanager
def _transformers_quiet():
    """transformers' own loading bars would interleave with ours and with one-line errors."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()

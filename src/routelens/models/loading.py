"""The one loader of models and tokenizers, in this process and in Ray actors.

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

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from routelens.errors import RoutelensError
from routelens.progress import transformers_bars_off

T = TypeVar("T")


class LoadSettings(Protocol):
    """What loading reads from a settings object (`routelens.trace.TraceConfig` is one); a protocol,
    so that the model layer does not depend on the stages above it."""

    device: str  # "cpu", "cuda", "cuda:1", ... (ignored under device_map)
    dtype: object  # "auto" or a torch dtype name
    device_map: object  # None, "auto", or accelerate's placement
    max_memory: dict | None
    offload_folder: str | None
    trust_remote_code: bool


def load_model(model: str | os.PathLike, config: LoadSettings):
    """The model (see `model_class`) + AutoTokenizer from a local directory or hub id, in eval mode."""
    from transformers import AutoConfig

    name = _checked_name(model)
    _checked_device(config.device)
    kwargs = _dtype_kwargs(config)
    if config.device_map is not None:
        # accelerate places each module (and hooks it to move activations between devices);
        # weights that fit no device live in offload_folder and are read back layer by layer.
        kwargs.update(
            device_map=str(config.device_map), max_memory=config.max_memory, offload_folder=config.offload_folder
        )
    tokenizer = load_tokenizer(name, config)
    hf_config = _loading(
        name, config, lambda: AutoConfig.from_pretrained(name, trust_remote_code=config.trust_remote_code)
    )
    auto = model_class(hf_config)
    hf_model = _loading(
        name,
        config,
        lambda: auto.from_pretrained(name, config=hf_config, trust_remote_code=config.trust_remote_code, **kwargs),
    )
    if config.device_map is None:
        hf_model = hf_model.to(config.device)
    return hf_model.eval(), tokenizer


def load_skeleton(model: str | os.PathLike, config: LoadSettings):
    """The model's modules on the meta device (no weights) and its tokenizer.

    A Ray driver only describes the routing and writes the manifest; the weights live in the
    actors, so a model larger than the driver's memory can still be traced.
    """
    import torch
    from transformers import AutoConfig

    name = _checked_name(model)
    tokenizer = load_tokenizer(name, config)
    hf_config = _loading(
        name, config, lambda: AutoConfig.from_pretrained(name, trust_remote_code=config.trust_remote_code)
    )
    dtype = _dtype_kwargs(config).get("dtype") or getattr(hf_config, "dtype", None) or torch.float32

    def build():
        with torch.device("meta"):
            return model_class(hf_config).from_config(
                hf_config, dtype=dtype, trust_remote_code=config.trust_remote_code
            )

    return _loading(name, config, build).eval(), tokenizer


def model_class(hf_config):
    """The transformers auto class to load `hf_config` with: the causal LM where the family has
    one; else the multimodal LM (Qwen3-VL-MoE, GLM-4.5V, ERNIE-4.5-VL, Qwen3-Omni-MoE: text corpora
    run its language model, the vision and audio towers never run); else the image-text-to-text
    model; else the base model (MoE encoders). A model with its own code (`auto_map`) is loaded by
    the first of these that its auto_map names. The trace computes with the base model either way
    (`base_model_prefix`), so the head that a class adds is never run."""
    import transformers
    from transformers.models.auto import modeling_auto as auto

    candidates = [
        ("AutoModelForCausalLM", auto.MODEL_FOR_CAUSAL_LM_MAPPING),
        ("AutoModelForMultimodalLM", getattr(auto, "MODEL_FOR_MULTIMODAL_LM_MAPPING", {})),
        ("AutoModelForImageTextToText", auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING),
        ("AutoModel", auto.MODEL_MAPPING),
    ]
    auto_map = getattr(hf_config, "auto_map", None) or {}
    for name, mapping in candidates:
        if name in auto_map or (hasattr(transformers, name) and type(hf_config) in mapping):
            return getattr(transformers, name)
    return transformers.AutoModelForCausalLM  # transformers' own error then says why it cannot


def load_tokenizer(model: str | os.PathLike, config: LoadSettings):
    from transformers import AutoTokenizer

    name = _checked_name(model)
    return _loading(
        name, config, lambda: AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code)
    )


def input_device(model, config: LoadSettings):
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


def _dtype_kwargs(config: LoadSettings) -> dict:
    import torch

    return {} if config.dtype == "auto" else {"dtype": getattr(torch, config.dtype)}


def _checked_device(device: str) -> None:
    """Refuse a device torch cannot name before the model is loaded (`--device foo`)."""
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise RoutelensError(f"--device {device} is not a device; use cpu, cuda or cuda:N (or mps).") from None


def _loading(name: str, config: LoadSettings, load: Callable[[], T]) -> T:
    """Run one transformers load with its progress bars off and its errors as one line."""
    return load_or_refuse(name, load, trust_remote_code=config.trust_remote_code)


def load_or_refuse(name: str, load: Callable[[], T], *, trust_remote_code: bool = False) -> T:
    """Run one transformers load (model, config or tokenizer of `name`) with its progress bars off;
    a folder it cannot load (corrupt or truncated safetensors, weights that do not fit the config,
    no tokenizer) is refused in one line."""
    from safetensors import SafetensorError

    with transformers_bars_off(), _held_warnings() as replay:
        try:
            loaded = load()
        except (OSError, ValueError, KeyError, ImportError, RuntimeError, SafetensorError) as exc:
            text = str(exc).strip()
            if "mismatched_sizes" in text:
                raise RoutelensError(
                    f"the weights of model {name!r} do not fit its config.json (tensor shapes differ: an expert count or "
                    "size edited in the config?); restore the config the weights were saved with."
                ) from None
            if isinstance(exc, SafetensorError) or "safetensors" in text.lower():
                first = text.splitlines()[0] if text else type(exc).__name__
                raise RoutelensError(
                    f"the weights of model {name!r} (model.safetensors) are damaged ({first}); "
                    "save or download the model again."
                ) from None
            if "trust_remote_code" in text and not trust_remote_code:
                raise RoutelensError(
                    f"model {name!r} ships its own modelling code (auto_map in its config.json); pass "
                    "--trust-remote-code to load it, which runs that Python code from the model folder "
                    "on this machine: only for a model whose source you trust."
                ) from None
            first = (text.splitlines()[0] if text else type(exc).__name__).rstrip(":. ")
            raise RoutelensError(
                f"could not load model {name!r}: {first}; check that the folder holds the config.json, "
                "weights and tokenizer files save_pretrained writes."
            ) from None
        replay()  # a load that succeeded shows transformers' notices (a load report of missing keys) as usual
        return loaded


@contextmanager
def _held_warnings() -> Iterator[Callable[[], None]]:
    """Hold transformers' log records during a load: a load that fails is refused in one line, with
    no "LOAD REPORT" table before it (transformers logs one before it raises); one that succeeds
    replays them to transformers' own handlers."""
    import logging

    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()  # the "transformers" logger its modules log through
    held: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    handlers, propagate = list(root.handlers), root.propagate
    hold = Hold()
    for h in handlers:
        root.removeHandler(h)
    root.addHandler(hold)
    root.propagate = False

    def replay() -> None:
        for record in held:
            for h in handlers:
                if record.levelno >= h.level:
                    h.handle(record)

    try:
        yield replay
    finally:
        root.removeHandler(hold)
        for h in handlers:
            root.addHandler(h)
        root.propagate = propagate


def config_sha256(model_config) -> str:
    """The identity of a model's whole config (every field, defaults included), as manifests record it."""
    return hashlib.sha256(model_config.to_json_string(use_diff=False).encode()).hexdigest()


def vocab_strings(tokenizer) -> list[str]:
    """Display text of every token id (what the token view shows)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in tokens]

"""TraceConfig: the settings of one `routelens trace` run, validated when built.

Torch-free on purpose: `routelens info` and the CLI's option parsing import this module, and
the check that a CUDA device exists imports torch only when a CUDA device is asked for.
Which settings decide the trace's content (and so its identity on disk) is said here once,
in `CONTENT_FREE`: where and how the model runs does not change the rows it records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum

from routelens.config import setting
from routelens.errors import RoutelensError

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # loading.py maps them to torch dtypes
SEQ_LEN = 512  # the window when --seq-len is not given, cut to what the model's positions allow

# Settings that change where or how fast the model runs, never what it records: they are left
# out of the trace's identity, so a run may be resumed with other placement or Ray settings.
CONTENT_FREE = (
    "overwrite",
    "progress",
    "device",
    "device_map",
    "max_memory",
    "offload_folder",
    "trust_remote_code",
    "ray",
    "ray_workers",
    "ray_gpus_per_worker",
    "verify",
)


class DeviceMap(StrEnum):
    """How accelerate spreads a model that may not fit one device (`from_pretrained(device_map=...)`)."""

    AUTO = "auto"  # fill the GPUs in order as balanced, then CPU memory, then --offload-folder
    BALANCED = "balanced"  # the same share of layers on each GPU
    SEQUENTIAL = "sequential"  # fill GPU 0, then GPU 1, ..., then CPU, then disk


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_UNIT = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
_MAX_MEMORY_HELP = "write DEVICE=SIZE pairs joined by commas, e.g. 0=70GiB,1=70GiB,cpu=200GiB"


def parse_max_memory(value: str | Mapping) -> dict[int | str, int]:
    """`0=70GiB,1=70GiB,cpu=200GiB` (or such a mapping) -> {0: bytes, 1: bytes, "cpu": bytes}.

    Devices are GPU indices, `cpu` or `mps`; sizes take a unit (B, KB, MB, GB, TB decimal;
    KiB, MiB, GiB, TiB binary). Anything else is refused rather than guessed.
    """
    pairs = value.items() if isinstance(value, Mapping) else [_split_pair(p) for p in str(value).split(",")]
    out: dict[int | str, int] = {}
    for device, size in pairs:
        key = _device_key(device)
        if key in out:
            raise RoutelensError(f"--max-memory names device {device!r} twice; {_MAX_MEMORY_HELP}.")
        out[key] = _size_bytes(size)
    if not out:
        raise RoutelensError(f"--max-memory is empty; {_MAX_MEMORY_HELP}.")
    return out


def _split_pair(pair: str) -> tuple[str, str]:
    device, sep, size = pair.strip().partition("=")
    if not sep or not device.strip() or not size.strip():
        raise RoutelensError(f"--max-memory entry {pair.strip()!r} is not DEVICE=SIZE; {_MAX_MEMORY_HELP}.")
    return device.strip(), size.strip()


def _device_key(device) -> int | str:
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    text = str(device).strip()
    if text.isdigit():
        return int(text)
    if text in ("cpu", "mps"):
        return text
    raise RoutelensError(f"--max-memory device {text!r} is unknown; use a GPU index (0, 1, ...), cpu or mps.")


def _size_bytes(size) -> int:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = _SIZE.fullmatch(str(size).strip())
    if not match or float(match[1]) <= 0:
        raise RoutelensError(
            f"--max-memory size {str(size)!r} is not a positive size with a unit such as 70GiB or 512MB."
        )
    return int(float(match[1]) * _UNIT[match[2]])


@dataclass
class TraceConfig:
    """Settings of one trace; each field's default and help are also the CLI option's."""

    seq_len: int | None = setting(
        None,
        "Window length in tokens; longer documents are cut into windows. Not given: 512, or fewer "
        "where the model's max_position_embeddings (less --generate) is shorter.",
        shown_default=f"{SEQ_LEN}, fitted to the model",
    )
    batch_size: int = setting(8, "Windows per forward pass.")
    max_tokens: int | None = setting(None, "At most this many tokens per corpus (the last document is cut to fit).")
    store_probs: bool = setting(False, "Also store the full router distribution (L x E float16 per token).")
    store_expert_norms: bool = setting(
        False,
        "Also store each chosen expert's output norm before weighting (for "
        "`routelens importance` reap; k more expert passes).",
    )
    lookahead: int = setting(
        0,
        "Also store, for each MoE layer and d = 1..D, the top-k the router of the MoE layer d "
        "steps later picks from this layer's router input (for `simulate cache --policy "
        "lookahead`); 0: off.",
    )
    generate: int = setting(
        0,
        "Each document is a prompt: decode this many tokens with the KV cache and record them "
        "too (rows get phase prefill / decode); 0: off (teacher-forced text).",
    )
    temperature: float = setting(0.0, "With --generate: 0 greedy, else sampling temperature.")
    top_p: float = setting(1.0, "With --generate and --temperature > 0: nucleus mass.")
    seed: int = setting(0, "With --generate and --temperature > 0: sampling seed.")
    device: str = setting(
        "cpu", "cpu or cuda (cuda:N): the one device of the whole model (leave cpu with --device-map)."
    )
    dtype: str = setting("auto", "Model dtype: auto (as saved), float32, bfloat16, float16.")
    weights_dtype: str = setting("float16", "Stored weight precision: float16 or float32.")
    shard_tokens: int = setting(1 << 18, "Target rows per Parquet shard (shards hold whole documents).")
    tagger: str | None = setting(None, "Tag raw text with UPOS: spacy or spacy:MODEL (routelens[pos]).")
    overwrite: bool = setting(False, "Replace a trace of another model or corpus in --out.")
    progress: bool = setting(True, "Show progress bars.")
    verify: bool = setting(
        True,
        "Check the first batch's recorded routing against the router's own choice and the "
        "MoE blocks' own outputs before anything is written; off: record unchecked (the manifest "
        "says so).",
    )
    ray: str | None = setting(
        None, "None: this process; local: a Ray instance of its own; auto or an address: a cluster."
    )
    ray_workers: int | None = setting(
        None, "Model actors (default: one per GPU of the cluster, else one per CPU but one)."
    )
    ray_gpus_per_worker: float | None = setting(
        None,
        "GPUs per model actor (default: 1 when the cluster has GPUs, else "
        "0: CPU actors; above 1 the model is spread over the actor's GPUs).",
    )
    device_map: DeviceMap | None = setting(
        None,
        "Spread a model larger than one device over the GPUs, CPU memory and disk (accelerate); see docs/scaling.md.",
    )
    max_memory: dict | None = setting(None, "Memory per device for --device-map, e.g. 0=70GiB,1=70GiB,cpu=200GiB.")
    offload_folder: str | None = setting(None, "Folder for the weights that fit no device (--device-map).")
    trust_remote_code: bool = setting(
        False, "Load a model that ships its own code (auto_map in config.json): runs that code here."
    )

    def __post_init__(self):
        for name in ("seq_len", "batch_size", "shard_tokens"):
            if name == "seq_len" and self.seq_len is None:
                continue  # fitted to the model once it is loaded (routelens.trace.run.fit_seq_len)
            if getattr(self, name) < 1:
                raise RoutelensError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)}).")
        if self.lookahead < 0:
            raise RoutelensError(f"--lookahead must be 0 (off) or a number of layers ahead (got {self.lookahead}).")
        self._check_generation()
        if self.max_tokens is not None and self.max_tokens < 1:
            raise RoutelensError(f"--max-tokens must be at least 1 (got {self.max_tokens}).")
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise RoutelensError(f"--dtype {self.dtype!r} is unknown; use auto, {', '.join(DTYPE_NAMES)}.")
        if self.weights_dtype not in ("float16", "float32"):
            raise RoutelensError(f"weights dtype {self.weights_dtype!r} is unknown; use float16 or float32.")
        if self.device.startswith("cuda") and self.ray is None:
            import torch  # only here: a CPU run never needs it to validate its settings

            if not torch.cuda.is_available():
                raise RoutelensError(f"--device {self.device}: no CUDA device is available here; use --device cpu.")
        if self.tagger is not None and not self.tagger.startswith("spacy"):
            raise RoutelensError(f"--tagger {self.tagger!r} is unknown; use spacy or spacy:MODEL.")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise RoutelensError(f"--ray-workers must be at least 1 (got {self.ray_workers}).")
        if self.ray_gpus_per_worker is not None and self.ray_gpus_per_worker < 0:
            raise RoutelensError(f"--ray-gpus-per-worker must be >= 0 (got {self.ray_gpus_per_worker}).")
        self._check_placement()

    def _check_generation(self) -> None:
        if self.generate < 0:
            raise RoutelensError(f"--generate must be 0 (off) or a number of tokens to decode (got {self.generate}).")
        if self.temperature < 0:
            raise RoutelensError(f"--temperature must be >= 0, 0 for greedy decoding (got {self.temperature}).")
        if not 0 < self.top_p <= 1:
            raise RoutelensError(f"--top-p must be in (0, 1] (got {self.top_p}).")
        if not self.generate:
            return
        if self.ray is not None:
            raise RoutelensError("--generate runs in this process only; drop --ray (or --ray-address).")

    def _check_placement(self) -> None:
        if self.device_map is not None:
            try:
                self.device_map = DeviceMap(self.device_map)
            except ValueError:
                raise RoutelensError(
                    f"--device-map {self.device_map!r} is unknown; use {', '.join(m.value for m in DeviceMap)}."
                ) from None
            if self.device != "cpu":
                raise RoutelensError(
                    f"--device {self.device} and --device-map {self.device_map} both place the model; drop --device."
                )
        if self.max_memory is not None:
            self.max_memory = parse_max_memory(self.max_memory)
        for name in ("max_memory", "offload_folder"):
            if getattr(self, name) is not None and self.device_map is None:
                flag = f"--{name.replace('_', '-')}"
                raise RoutelensError(
                    f"{flag} applies to a device map; add --device-map auto (or balanced, sequential)."
                )
        if self.offload_folder is not None:
            self.offload_folder = str(self.offload_folder)

    def window(self) -> int:
        """The window length in tokens, once fitted to the model (`routelens.trace.run.fit_seq_len`)."""
        if self.seq_len is None:  # internal: `trace` fits seq_len before anything plans windows
            raise ValueError("seq_len is not fitted to the model yet; call routelens.trace.run.fit_seq_len first")
        return self.seq_len

    def identity(self) -> dict:
        """The settings that decide the trace's content (part of the trace's identity on disk)."""
        out = {k: v for k, v in asdict(self).items() if k not in CONTENT_FREE}
        if not self.store_expert_norms:  # absent when off: traces begun before the flag existed still resume
            del out["store_expert_norms"]
        if not self.lookahead:  # likewise
            del out["lookahead"]
        if not self.generate:  # likewise: a teacher-forced trace's identity is as before the flag existed
            for name in ("generate", "temperature", "top_p", "seed"):
                del out[name]
        return out

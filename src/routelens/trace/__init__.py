"""The trace stage: run a MoE language model over corpora and record its routing on disk.

    routelens.trace("path/to/moe-model", {"web": "c4.txt"}, out="trace/")   # this package is callable

    corpora --plan (plan.py: documents -> windows -> shards)--> shards of token windows
      --compute (compute.py: forward passes, the routers' decisions -> rows)--> Parquet shards
      (store/writer.py, atomic) --> manifest.json with totals (totals.py)

- `config.py`   TraceConfig, the device-map settings; torch-free
- `loading.py`  the one model and tokenizer loader (device, device map, meta skeleton, remote code)
- `plan.py`     corpora -> windows -> shards; needs a tokenizer, never a model
- `compute.py`  one shard through the model into a table
- `local.py`    the backend of this process; `ray_backend.py` the backend of a Ray actor pool,
                built on the same plan, compute and writer (the core never imports it)
- `run.py`      `trace()`: load, describe, open the output, run a backend, finish the manifest
- `summary.py`  what `routelens info` shows; torch-free

Importing this package imports neither torch nor transformers: they load when a trace runs.
"""

from __future__ import annotations

import sys
import types

from routelens.trace.config import DeviceMap, TraceConfig, parse_max_memory
from routelens.trace.run import trace
from routelens.trace.summary import dumps, summarize

__all__ = ["DeviceMap", "TraceConfig", "dumps", "parse_max_memory", "summarize", "trace"]


class _CallableModule(types.ModuleType):
    """`routelens.trace` is this package, and `routelens.trace(...)` has always been the function:
    importing a submodule binds the package as `routelens.trace`, so the package itself calls
    `trace()` (looked up at call time, so that patching `routelens.trace.trace` takes effect)."""

    def __call__(self, *args, **kwargs):
        return self.trace(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

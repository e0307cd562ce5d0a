"""Routing recorded where models are served: import from serving engines, export load statistics
to them.

    import_engine("vllm", "requests.jsonl", "path/to/model", "trace/")     # vLLM routed experts
    import_engine("sglang", "dump.pt", "path/to/model", "trace/")          # SGLang recorder or JSONL
    export_load("trace/", "expert_location.json", format="sglang")         # --init-expert-location

- `model.py`     the model's MoE layers, E and k from its config (meta device, no weights)
- `records.py`   one request as rows (phase prefill / decode); the shared JSON-lines reading
- `vllm.py`, `sglang.py`   each engine's response formats; `recorder.py` SGLang's recorder dump
- `importer.py`  ImportConfig and the writing of the trace (format version 2: no weights)
- `export.py`    per-layer expert loads for SGLang's --init-expert-location and DeepSeek's EPLB

Importing this package imports neither torch nor transformers.
"""

from routelens.engines.export import ExportConfig, expert_load, export_load
from routelens.engines.importer import Engine, ImportConfig, import_engine, import_sglang, import_vllm

__all__ = [
    "Engine",
    "ExportConfig",
    "ImportConfig",
    "expert_load",
    "export_load",
    "import_engine",
    "import_sglang",
    "import_vllm",
]

"""vLLM's routed experts (`enable_return_routed_experts`) saved as JSON lines, one request a line:

    {"prompt_token_ids": [...], "output_token_ids": [...],
     "prompt_routed_experts": [[[e, ...], ...], ...],   # (prompt tokens, layers, k)
     "routed_experts": [[[e, ...], ...], ...],          # (output tokens, layers, k)
     "domain": "chat", "request_id": "req-17"}          # both optional

`layers` is the MoE layers or every decoder layer with -1 in the dense ones. Without
`prompt_routed_experts`, `routed_experts` covers the prompt's tokens and then the output's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from routelens.engines.model import EngineModel
from routelens.engines.records import EngineDocument, json_lines, optional_text, routed_document


def read_vllm(path: str | os.PathLike, model: EngineModel) -> Iterator[EngineDocument]:
    """The requests of a vLLM JSON-lines file, in file order."""
    for where, obj in json_lines(path):
        yield routed_document(
            model,
            where,
            obj.get("prompt_token_ids"),
            obj.get("output_token_ids"),
            obj.get("routed_experts"),
            prompt_routed=obj.get("prompt_routed_experts"),
            domain=optional_text(obj, "domain", where),
            request_id=optional_text(obj, "request_id", where),
        )

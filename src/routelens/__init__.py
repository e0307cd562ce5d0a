"""routelens: record, analyze and exploit the routing of Mixture-of-Experts language models.

    import routelens
    routelens.trace("path/to/moe-model", {"web": "c4.txt"}, out="trace/")
    tr = routelens.open_trace("trace/")
    result = routelens.analyze(tr)

The names in `__all__` are the public API, each documented with a runnable example in docs/api.md
(tests/test_api_docs.py runs them). Every command of the CLI calls one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routelens.errors import RoutelensError, UnsupportedModelError
from routelens.version import VERSION as __version__

# Names are read on first use: `import routelens` must stay light (no torch, transformers, numba or
# pyarrow until a function that needs them runs), so each name maps to the module that defines it.
_FROM = {
    # tracing and the trace format
    **dict.fromkeys(["Trace", "TraceChunk", "open_trace"], "routelens.store.reader"),
    "TraceConfig": "routelens.trace.config",
    "summarize": "routelens.trace.summary",
    "write_summary": "routelens.trace.summary",
    "write_builtin_corpus": "routelens.corpus.builtin",
    **dict.fromkeys(["SyntheticSpec", "write_synthetic_trace"], "routelens.synthetic"),
    # analysis
    **dict.fromkeys(["AnalyzeConfig", "analyze", "write_json"], "routelens.analysis.analyze"),
    **dict.fromkeys(["SaturationConfig", "router_saturation"], "routelens.analysis.saturation"),
    "compare_traces": "routelens.analysis.compare",
    "js_divergence": "routelens.analysis.distribution",
    "random_baseline": "routelens.analysis.locality",
    # simulators
    **dict.fromkeys(["CacheConfig", "cache_metrics", "simulate_cache"], "routelens.simulate.cache"),
    **dict.fromkeys(["BalanceConfig", "simulate_balance"], "routelens.simulate.balance"),
    **dict.fromkeys(["DistinctConfig", "simulate_distinct"], "routelens.simulate.distinct"),
    **dict.fromkeys(["cache_with_control", "simulate_all"], "routelens.simulate.suite"),
    **dict.fromkeys(["Placement", "Policy"], "routelens.simulate.policies"),
    # serving engines
    **dict.fromkeys(
        ["Engine", "ImportConfig", "import_engine", "import_sglang", "import_vllm"], "routelens.engines.importer"
    ),
    **dict.fromkeys(["ExportConfig", "LoadFormat", "expert_load", "export_load"], "routelens.engines.export"),
    **dict.fromkeys(["PlacementConfig", "PlacementFormat", "export_placement"], "routelens.engines.placement"),
    # pruning
    **dict.fromkeys(["AblateConfig", "Criterion", "ImportanceConfig", "PruneConfig"], "routelens.pruning.configs"),
    "expert_importance": "routelens.pruning.importance",
    "prune": "routelens.pruning.checkpoint",
    "ablate": "routelens.pruning.ablation",
    # training
    **dict.fromkeys(["EvalConfig", "TrainConfig", "UpcycleConfig"], "routelens.training.configs"),
    "UpcycleMode": "routelens.training",
    "train": "routelens.training.train",
    "evaluate": "routelens.training.evaluate",
    "upcycle": "routelens.training.upcycle",
    "inspect_model": "routelens.training.params",
    # report and demo
    "write_report": "routelens.report.build",
    "build_report": "routelens.report.inputs",
    **dict.fromkeys(["DemoConfig", "run_demo"], "routelens.demo"),
    # models
    **dict.fromkeys(["MoESpec", "describe_model", "supported_families"], "routelens.models.families"),
    "family_rows": "routelens.capture.listing",
    "families_to_verify": "routelens.capture.listing",
    "verify_family": "routelens.capture.verify",
    "verify_families": "routelens.capture.verify",
    "replay": "routelens.models.replay",
    "replay_report": "routelens.analysis.replay_report",
}

__all__ = [  # every name of _FROM, and those defined above
    "AblateConfig",
    "AnalyzeConfig",
    "BalanceConfig",
    "CacheConfig",
    "Criterion",
    "DemoConfig",
    "DistinctConfig",
    "Engine",
    "EvalConfig",
    "ExportConfig",
    "ImportConfig",
    "ImportanceConfig",
    "LoadFormat",
    "MoESpec",
    "Placement",
    "PlacementConfig",
    "PlacementFormat",
    "Policy",
    "PruneConfig",
    "RoutelensError",
    "SaturationConfig",
    "SyntheticSpec",
    "Trace",
    "TraceChunk",
    "TraceConfig",
    "TrainConfig",
    "UnsupportedModelError",
    "UpcycleConfig",
    "UpcycleMode",
    "__version__",
    "ablate",
    "analyze",
    "build_report",
    "cache_metrics",
    "cache_with_control",
    "compare_traces",
    "describe_model",
    "evaluate",
    "expert_importance",
    "expert_load",
    "export_load",
    "export_placement",
    "families_to_verify",
    "family_rows",
    "import_engine",
    "import_sglang",
    "import_vllm",
    "inspect_model",
    "js_divergence",
    "open_trace",
    "prune",
    "random_baseline",
    "replay",
    "replay_report",
    "router_saturation",
    "run_demo",
    "simulate_all",
    "simulate_balance",
    "simulate_cache",
    "simulate_distinct",
    "summarize",
    "supported_families",
    "trace",
    "train",
    "upcycle",
    "verify_families",
    "verify_family",
    "write_builtin_corpus",
    "write_json",
    "write_report",
    "write_summary",
    "write_synthetic_trace",
]

if TYPE_CHECKING:
    # what a type checker sees; at run time `routelens.trace` is the package, callable as the function
    from routelens.analysis.analyze import AnalyzeConfig, analyze, write_json
    from routelens.analysis.compare import compare_traces
    from routelens.analysis.distribution import js_divergence
    from routelens.analysis.locality import random_baseline
    from routelens.analysis.saturation import SaturationConfig, router_saturation
    from routelens.capture.listing import families_to_verify, family_rows
    from routelens.capture.verify import verify_families, verify_family
    from routelens.corpus.builtin import write_builtin_corpus
    from routelens.demo import DemoConfig, run_demo
    from routelens.engines.export import ExportConfig, LoadFormat, expert_load, export_load
    from routelens.engines.importer import Engine, ImportConfig, import_engine, import_sglang, import_vllm
    from routelens.engines.placement import PlacementConfig, PlacementFormat, export_placement
    from routelens.models.families import MoESpec, describe_model, supported_families
    from routelens.pruning.ablation import ablate
    from routelens.pruning.checkpoint import prune
    from routelens.pruning.configs import AblateConfig, Criterion, ImportanceConfig, PruneConfig
    from routelens.pruning.importance import expert_importance
    from routelens.report.build import write_report
    from routelens.report.inputs import build_report
    from routelens.simulate.balance import BalanceConfig, simulate_balance
    from routelens.simulate.cache import CacheConfig, cache_metrics, simulate_cache
    from routelens.simulate.distinct import DistinctConfig, simulate_distinct
    from routelens.simulate.policies import Placement, Policy
    from routelens.simulate.suite import cache_with_control, simulate_all
    from routelens.store.reader import Trace, TraceChunk, open_trace
    from routelens.synthetic import SyntheticSpec, write_synthetic_trace
    from routelens.trace.config import TraceConfig
    from routelens.trace.run import trace
    from routelens.trace.summary import summarize, write_summary
    from routelens.training import UpcycleMode
    from routelens.training.configs import EvalConfig, TrainConfig, UpcycleConfig
    from routelens.training.evaluate import evaluate
    from routelens.training.params import inspect_model
    from routelens.training.train import train
    from routelens.training.upcycle import upcycle


def __getattr__(name: str):
    import importlib

    if name == "trace":
        # the subpackage, which is also the function (routelens.trace.__init__'s _CallableModule);
        # importing it binds it here, so this runs once
        return importlib.import_module("routelens.trace")
    if name in _FROM:  # looked up each time, so that patching the defining module takes effect
        return getattr(importlib.import_module(_FROM[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

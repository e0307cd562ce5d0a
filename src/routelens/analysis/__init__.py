"""Routing analyses of a trace: the Mixtral paper's (expert distribution per domain, positional
locality) and OLMoE's (vocabulary specialization, co-activation, router saturation), plus router
confidence and the part-of-speech analyses (`routelens.analysis.pos`, imported on demand).

    from routelens.analysis import analyze, write_json
    result = analyze("trace/")          # one streaming pass; schema in docs/analysis-json.md
    write_json(result, "analysis.json")
"""

from routelens.analysis.analyze import (
    ALL,
    AnalyzeConfig,
    analyze,
    to_json_ready,
    write_json,
)
from routelens.analysis.distribution import js_divergence
from routelens.analysis.locality import random_baseline
from routelens.analysis.saturation import SaturationConfig, router_saturation

__all__ = [
    "ALL",
    "AnalyzeConfig",
    "SaturationConfig",
    "analyze",
    "js_divergence",
    "random_baseline",
    "router_saturation",
    "to_json_ready",
    "write_json",
]

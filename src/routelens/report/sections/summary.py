"""The report's first section: the model, the corpora and the facts of the trace."""

from __future__ import annotations

from routelens.report.html import Section, cards, esc, kv_table, pct, table
from routelens.report.sections.context import ReportContext


def summary_section(ctx: ReportContext) -> Section:
    m = ctx.trace.manifest
    model = m.get("model") or {}
    corpora = m.get("corpora") or []
    total = sum(int(c.get("tokens", 0)) for c in corpora) or ctx.trace.num_tokens
    layer_list = ", ".join(ctx.layers) if len(ctx.layers) <= 16 else f"{ctx.layers[0]} … {ctx.layers[-1]}"
    body = cards(
        [
            ("model", esc(model.get("name_or_path", "unknown"))),
            ("tokens", f"{total:,}"),
            ("MoE layers", f"{len(ctx.layers)}"),
            ("experts E", f"{ctx.num_ids}"),
            ("top-k", f"{ctx.top_k}"),
            ("domains", f"{len(ctx.domains)}"),
        ]
    )
    rows = [
        [
            esc(c["name"]),
            esc(c.get("source", "")),
            f"{int(c.get('documents', 0)):,}",
            f"{int(c.get('tokens', 0)):,}",
            pct(int(c.get("tokens", 0)) / total if total else None),
        ]
        for c in corpora
    ]
    body += "<h3>Corpora</h3>" + table(["domain", "source", "documents", "tokens", "share"], rows)
    facts = [
        ("architecture", model.get("architecture")),
        ("family", m.get("family")),
        ("routing rule", m.get("routing_rule")),
        ("MoE layers (true indices)", layer_list),
        ("tokenizer", (m.get("tokenizer") or {}).get("name")),
        ("sequence length", m.get("seq_len")),
        ("parameters per expert", f"{model['expert_params']:,}" if model.get("expert_params") else None),
        ("trace", str(ctx.trace.path)),
    ]
    body += "<h3>Trace</h3>" + kv_table([(k, v) for k, v in facts if v not in (None, "")])
    return Section("summary", "Summary", "", body)

"""Hostile strings in every input of `routelens report` (trace domains, model and tokenizer names,
corpus paths, token text, every string and key of the JSON inputs) come out as text: the page holds
no element, attribute or script they did not already have, in Python's HTML parser and in headless
Chromium; a domain named like matplotlib math (`$\\foo$`) does not make any section vanish."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.report.conftest import extras, make_trace
from tests.report.test_browser import CHROMIUM, chromium, console_errors

# Each payload would add an element, an attribute, a script or a math formula if it were not escaped.
HOSTILE = [
    "<script>window.PWNED=1</script>",
    '"><img src=x onerror="document.title=1">',
    "$\\foo$",
    "{{x}}{0}",
    "</title><iframe src=x></iframe>",
    "'onmouseover='alert(1)",
    "<svg onload=alert(1)>",
    "]]><b id=inj>x</b>",
]
FORBIDDEN_TAGS = {"script", "img", "iframe", "object", "embed"}
SECTIONS = [
    "summary",
    "distribution",
    "domain-distance",
    "locality",
    "token-view",
    "vocabulary",
    "coactivation",
    "confidence",
    "pos",
    "saturation",
    "cache",
    "balance",
    "distinct",
    "compare",
]


class Elements(HTMLParser):
    """Every start tag and attribute name of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]


def injected(page: str) -> list[str]:
    """What in `page` can only have come from an unescaped payload."""
    parser = Elements()
    parser.feed(page)
    bad = [f"<{t}>" for t in parser.tags if t in FORBIDDEN_TAGS]
    bad += [f"{t} {a}=" for t, a, _ in parser.attrs if a.startswith("on") or a in {"src", "href"} and t != "a"]
    bad += [f"{t} id={v}" for t, a, v in parser.attrs if a == "id" and v == "inj"]
    return bad


def hostile(i: int) -> str:
    return HOSTILE[i % len(HOSTILE)]


def poison(value, counter=[0]):  # noqa: B006 (a running count so that every field gets a different payload)
    """`value` with every string replaced by a hostile one and every key that is not a number or
    a known field name given a hostile twin."""
    if isinstance(value, dict):
        return {k: poison(v) for k, v in value.items()}
    if isinstance(value, list):
        return [poison(v) for v in value]
    if isinstance(value, str):
        counter[0] += 1
        return hostile(counter[0])
    return value


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from routelens.analysis import analyze

    root = tmp_path_factory.mktemp("hostile")
    domains = (HOSTILE[2], HOSTILE[0], HOSTILE[1])
    trace = make_trace(root / "trace", layers=(0, 3), domains=domains, first_dist={})
    manifest_path = trace.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"] = {
        "name_or_path": HOSTILE[1],
        "architecture": HOSTILE[0],
        "config_sha256": None,
        "expert_params": 7,
    }
    manifest["family"], manifest["routing_rule"] = HOSTILE[3], HOSTILE[4]
    manifest["tokenizer"]["name"] = HOSTILE[5]
    for i, corpus in enumerate(manifest["corpora"]):
        corpus["source"] = f"/data/{hostile(i + 4)}.jsonl"
    manifest_path.write_text(json.dumps(manifest))
    vocab = json.loads((trace.path / "vocab.json").read_text())["tokens"]
    (trace.path / "vocab.json").write_text(
        json.dumps({"tokens": [hostile(i) if i % 3 == 0 else t for i, t in enumerate(vocab)]})
    )

    analysis = analyze(trace, bootstrap=5, progress=False)
    (root / "analysis.json").write_text(json.dumps(analysis))
    sim = extras(["0", "3"], 8, 2)
    meta = {"tokens": trace.num_tokens, "num_experts": 8, "top_k": 2}
    # Policies, placements, tags and checkpoints named by payloads; layer keys of the cache that are not
    # the trace's layers (the injection reached a figure caption through them).
    cache = {
        hostile(i): {HOSTILE[0]: by_layer["0"], HOSTILE[1]: by_layer["3"]}
        for i, by_layer in enumerate(sim["cache"].values())
    }
    balance = {hostile(i + 1): {cf: v for cf, v in by.items()} for i, by in enumerate(sim["balance"].values())}
    (root / "cache.json").write_text(json.dumps({"cache": cache, "cache_meta": poison({**meta, "policies": ["lru"]})}))
    (root / "balance.json").write_text(json.dumps({"balance": balance, "balance_meta": {**meta, "note": HOSTILE[4]}}))
    distinct = {layer: {"mean": 4.5, "p50": 4, "p95": 6, "max": 7, "batches": 10} for layer in ("0", "3")}
    (root / "distinct.json").write_text(
        json.dumps({"distinct": distinct, "distinct_meta": {**meta, "batch": 4, "note": HOSTILE[5]}})
    )
    pos = sim["pos"]
    rename = {"NOUN": HOSTILE[0], "VERB": HOSTILE[1], "PUNCT": HOSTILE[2]}

    def tags(value):
        if isinstance(value, dict):
            return {rename.get(k, k): tags(v) for k, v in value.items()}
        if isinstance(value, list):
            return [tags(v) for v in value]
        return rename.get(value, value) if isinstance(value, str) else value

    saturation = dict(sim["saturation"], checkpoints=[HOSTILE[0], HOSTILE[1], HOSTILE[6]])
    (root / "extra.json").write_text(json.dumps({"meta": analysis["meta"], "pos": tags(pos), "saturation": saturation}))
    agreement = {
        d: {layer: {"first": 0.9, "overlap": 0.8, "set_equal": 0.7} for layer in ("0", "3")} for d in [*domains, "all"]
    }
    compare = {
        "meta": {
            "a": HOSTILE[0],
            "b": HOSTILE[1],
            "models": {"a": HOSTILE[4], "b": HOSTILE[5]},
            "dtypes": {"a": HOSTILE[6], "b": HOSTILE[7]},
            "tokens": trace.num_tokens,
            "layers": [0, 3],
            "unmatched": {"a": 0, "b": 0},
        },
        "agreement": agreement,
        "any_layer_differs": {d: 0.1 for d in agreement},
        "by_margin": {
            "flip": HOSTILE[1],
            "margin": HOSTILE[0],
            "trace": HOSTILE[6],
            "edges": [0, 0.5, 1.0],
            "rate": [0.2, 0.1],
            "count": [10, 10],
        },
    }
    (root / "compare.json").write_text(json.dumps(compare))
    done = CliRunner().invoke(app, ["importance", str(trace.path), "--json", str(root / "importance.json"), "-q"])
    assert done.exit_code == 0, done.output
    return root


@pytest.fixture(scope="module")
def report(inputs) -> Path:
    out = inputs / "out" / "report.html"
    args = [
        "report",
        str(inputs / "trace"),
        "-o",
        str(out),
        "-q",
        "--analysis",
        str(inputs / "analysis.json"),
        "--json",
        str(inputs / "extra.json"),
        "--cache",
        str(inputs / "cache.json"),
        "--balance",
        str(inputs / "balance.json"),
        "--compare",
        str(inputs / "compare.json"),
        "--importance",
        str(inputs / "importance.json"),
        "--distinct",
        str(inputs / "distinct.json"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_the_detector_sees_an_unescaped_payload():
    for payload in HOSTILE:
        if "$" in payload or "{" in payload:
            continue  # not markup
        contexts = [f"<p>{payload}</p>", f"<p title='{payload}'>x</p>", f'<p title="{payload}">x</p>']
        assert any(injected(f"<html><body>{c}</body></html>") for c in contexts), payload


@pytest.mark.slow
def test_every_section_is_there_and_none_was_skipped(report):
    text = report.read_text(encoding="utf-8")
    assert set(SECTIONS) <= set(re.findall(r'<section id="([^"]+)">', text))
    assert "Not in this report" not in text
    assert "skipped" not in text.split('<section id="summary">')[1].split("</section>")[0]


def test_payloads_are_text_in_the_file(report):
    text = report.read_text(encoding="utf-8")
    assert injected(text) == []
    assert "&lt;script&gt;window.PWNED=1&lt;/script&gt;" in text  # shown, escaped, not dropped
    assert HOSTILE[2] in text  # the math-looking domain is shown as written


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_payloads_are_text_in_chromium(report, tmp_path):
    run = chromium(report, tmp_path / "profile", "--dump-dom")
    assert console_errors(run.stderr) == []
    dom = run.stdout
    assert set(SECTIONS) <= set(re.findall(r'<section id="([^"]+)">', dom))
    assert injected(dom) == []
    assert "PWNED" not in re.sub(r"&lt;script&gt;window\.PWNED=1&lt;/script&gt;", "", dom).replace("window.PWNED=1", "")
    assert re.search(r"<title>[^<]*</title>", dom)  # the payload did not close the title

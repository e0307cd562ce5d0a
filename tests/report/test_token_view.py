"""Token view: the right tokens are sampled (across chunk boundaries), and the HTML gives back
exactly the token text, escaped, with whitespace kept and the top-k in the tooltip."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from routelens.errors import RoutelensError
from routelens.report.colors import expert_colors, tint
from routelens.report.token_view import collect_samples, render_token_view, token_text
from tests.report.conftest import LAYERS, SPECIAL, make_trace


class Spans(HTMLParser):
    """Collects (text, title, style, class) of every token span."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "tok" in attrs.get("class", "").split():
            self._open = [[], attrs["title"], attrs["style"], attrs["class"]]

    def handle_data(self, data):
        if self._open is not None:
            self._open[0].append(data)

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(("".join(self._open[0]), *self._open[1:]))
            self._open = None


def reference(trace, layers, docs, tokens, min_tokens):
    """Brute force: per domain the first `docs` documents of at least `min_tokens` rows (short
    ones only to fill up), their first `tokens` rows, in document order."""
    whole = trace.load(["weights"])
    cols = [trace.layers.index(x) for x in layers]
    out = []
    for d in range(len(trace.domains)):
        ids = list(dict.fromkeys(whole.doc_id[whole.domain == d].tolist()))
        long = [i for i in ids if (whole.doc_id == i).sum() >= min(min_tokens, tokens)]
        chosen = long[:docs] + [i for i in ids if i not in long][: docs - len(long[:docs])]
        for doc in sorted(chosen):
            rows = np.flatnonzero(whole.doc_id == doc)[:tokens]
            out.append(
                (
                    trace.domains[d],
                    doc,
                    whole.token_id[rows],
                    whole.experts[rows][:, cols],
                    whole.weights[rows][:, cols],
                )
            )
    return out


@pytest.mark.parametrize(
    "doc_len,rows,min_tokens",
    [((3, 50), 7, 1), ((3, 50), 7, 30), ((1, 3), 2, 2), ((1, 3), 5, 10), (40, 1 << 16, 5)],
)
def test_samples_match_brute_force(tmp_path, doc_len, rows, min_tokens):
    trace = make_trace(tmp_path / "t", doc_len=doc_len)
    layers = [7, 0]  # order as asked, not as stored
    got = collect_samples(trace, layers, docs_per_domain=3, max_tokens=10, min_tokens=min_tokens, rows=rows)
    want = reference(trace, layers, 3, 10, min_tokens)
    assert [(s.domain, s.doc_id) for s in got] == [(w[0], w[1]) for w in want]
    for s, (_, _, tok, exp, wts) in zip(got, want):
        np.testing.assert_array_equal(s.token_id, tok)
        np.testing.assert_array_equal(s.experts, exp)  # (n, layers, k)
        np.testing.assert_array_equal(s.weights, wts)
        assert s.experts.shape == (len(tok), 2, 2)


def test_sampling_stops_early(tmp_path, monkeypatch):
    trace = make_trace(tmp_path / "t", num_docs=40, doc_len=20)
    total = sum(1 for _ in trace.iter_chunks(rows=16))
    seen = []
    original = trace.iter_chunks

    def counting(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            seen.append(len(chunk))
            yield chunk

    monkeypatch.setattr(trace, "iter_chunks", counting)
    samples = collect_samples(trace, [0], docs_per_domain=1, max_tokens=5, rows=16)
    assert len(samples) == 2
    # Domain `code` fills the first half; reading stops with the first chunk of `prose`.
    assert len(seen) == total // 2 + 1


def test_fewer_documents_than_asked(tmp_path):
    trace = make_trace(tmp_path / "t", num_docs=2)
    samples = collect_samples(trace, [3], docs_per_domain=5, max_tokens=4)
    assert [(s.domain, s.doc_id) for s in samples] == [("code", 0), ("code", 1), ("prose", 2), ("prose", 3)]


def test_unknown_layer_names_the_choices(tmp_path):
    trace = make_trace(tmp_path / "t")
    with pytest.raises(RoutelensError, match=r"--layers 1,2: .*choose among 0,3,7"):
        collect_samples(trace, [0, 1, 2])


def test_html_round_trips_text_escaped_with_whitespace(tmp_path):
    trace = make_trace(tmp_path / "t", vocab_size=len(SPECIAL) + 2, doc_len=30)
    samples = collect_samples(trace, list(LAYERS), docs_per_domain=2, max_tokens=30)
    html = render_token_view(samples, list(LAYERS), trace.vocab, trace.num_experts)
    assert "<script>" not in html and "</span></span>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a &amp; b" in html
    parser = Spans()
    parser.feed(html)
    colors = [tint(c) for c in expert_colors(trace.num_experts)]
    expected = []
    for s in samples:
        for j, layer in enumerate(LAYERS):
            for i, t in enumerate(s.token_id):
                expected.append((trace.vocab[t], s.experts[i, j], s.weights[i, j], layer))
    assert len(parser.spans) == len(expected)
    for (text, title, style, cls), (want, experts, weights, layer) in zip(parser.spans, expected):
        assert text == want  # exact: escaping undone by the parser, whitespace intact
        assert style == f"background:{colors[experts[0]]}"
        assert f"layer {layer}: e{experts[0]} {float(weights[0]):.2f} · e{experts[1]} {float(weights[1]):.2f}" in title
        assert ("nl" in cls.split()) == want.endswith("\n")
    assert {s[0] for s in parser.spans} >= set(SPECIAL) - {""}  # every hostile token was exercised


def test_block_per_layer_and_legend(tmp_path):
    trace = make_trace(tmp_path / "t")
    samples = collect_samples(trace, [0, 7], docs_per_domain=1, max_tokens=5)
    html = render_token_view(samples, [0, 7], trace.vocab, trace.num_experts)
    assert html.count('<div class="tv-block">') == len(samples) * 2
    assert html.count('class="chip"') == trace.num_experts
    assert "white-space" not in html  # the CSS lives in the page; blocks only carry the class
    assert html.count('class="tv-text"') == len(samples) * 2


def test_token_text_fallback():
    assert token_text(["a", ""], 0) == "a"
    assert token_text(["a", ""], 1) == "\u27e81\u27e9"  # empty display string
    assert token_text([], 42) == "\u27e842\u27e9"

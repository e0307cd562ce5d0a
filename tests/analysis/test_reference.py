"""`analyze` against the analysis saved from the code before issue 25 (data/make_reference.py):
every deterministic statistic equal, the resampled ones within their Monte Carlo error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from routelens.analysis import analyze
from tests.analysis.data import make_reference

REFERENCE = Path(make_reference.__file__).parent / "reference_analysis.json"
SHUFFLES = make_reference.CONFIG["locality_permutations"]
# Keys resampled in the reference (the mean and spread of SHUFFLES shuffles) and exact now.
RESAMPLED = {"locality_permuted", "locality_permuted_sd", "locality_excess"}


def _flat(value, prefix=()):
    if isinstance(value, dict):
        for key, v in value.items():
            yield from _flat(v, (*prefix, key))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flat(v, (*prefix, i))
    else:
        yield prefix, value


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    got = analyze(make_reference.trace(tmp_path_factory.mktemp("ref")), **make_reference.CONFIG)
    got["meta"].pop("trace")
    return json.loads(REFERENCE.read_text()), json.loads(json.dumps(got))


def test_deterministic_statistics_equal_the_reference(results):
    ref, got = results
    ref_flat = dict(_flat({k: v for k, v in ref.items() if k not in RESAMPLED}))
    got_flat = dict(_flat({k: v for k, v in got.items() if k not in RESAMPLED}))
    assert set(got) == set(ref)
    added = set(got_flat) - set(ref_flat)
    assert added == {("meta", "params", "locality_null")}, added
    assert got["meta"]["params"]["locality_null"] == "exact"
    for key, want in ref_flat.items():
        have = got_flat[key]
        if isinstance(want, float) and not isinstance(have, bool):
            assert have == pytest.approx(want, rel=1e-12, abs=1e-15), key
        else:
            assert have == want, key


def test_exact_null_is_within_the_monte_carlo_error_of_the_shuffled_reference(results):
    """The reference averaged SHUFFLES shuffles: its mean is off the expectation by about
    sd / sqrt(SHUFFLES) (sd: one shuffle's, now exact), so 4 of those bound it; its sample sd
    estimates sd within a relative 4 / sqrt(2 (SHUFFLES - 1)); the bootstrap intervals of the
    excess used the same resampled documents, so their ends move by the same order of error
    (6 of those bound them)."""
    ref, got = results
    rel_sd = 4 / math.sqrt(2 * (SHUFFLES - 1))
    for domain, layers in got["locality_permuted"].items():
        for layer, cell in layers.items():
            for stat in ("first", "any"):
                sd = got["locality_permuted_sd"][domain][layer][stat]
                err = sd / math.sqrt(SHUFFLES)
                assert abs(cell[stat] - ref["locality_permuted"][domain][layer][stat]) < 4 * err
                assert ref["locality_permuted_sd"][domain][layer][stat] == pytest.approx(sd, rel=rel_sd)
                excess, want = got["locality_excess"][domain][layer], ref["locality_excess"][domain][layer]
                assert abs(excess[stat] - want[stat]) < 4 * err
                for end in ("low", "high"):
                    assert abs(excess[f"{stat}_ci"][end] - want[f"{stat}_ci"][end]) < 6 * err

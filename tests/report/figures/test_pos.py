"""The POS figures render from the `pos` dict (after a JSON round trip), colour tags the same way
whatever the hash seed, and live in the report: importing the analyses loads no matplotlib."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from routelens.report.figures.pos import ablation_figure, path_map_figure, specialization_figure
from tests.report.conftest import extras

LAYERS = ["0", "3", "7"]
REPO = Path(__file__).resolve().parents[3]


def pos_result() -> dict:
    return json.loads(json.dumps(extras(LAYERS, 8, 2)["pos"]))


def test_specialization_heatmap_per_layer_holds_the_shares():
    pos = pos_result()
    fig = specialization_figure(pos, ["3", "7"])
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["layer 3", "layer 7"]
    np.testing.assert_allclose(
        panels[1].images[0].get_array(), [pos["shares"]["7"][t] for t in ("NOUN", "VERB", "PUNCT")]
    )


def test_ablation_curves_and_baselines():
    pos = pos_result()
    ax = ablation_figure(pos).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [pos["ablation"]["single"][x] for x in LAYERS])
    assert len(ax.lines) == 3 + 3  # single, prefix, drop + full probe, word-form and majority lines


def test_path_map_colours_do_not_depend_on_the_hash_seed():
    code = (
        "import json, sys; sys.path.insert(0, '.');"
        "from tests.report.conftest import extras;"
        "from routelens.report.figures.pos import path_map_figure;"
        "ax = path_map_figure(extras(['0', '3', '7'], 8, 2)['pos']).axes[0];"
        "print(json.dumps([[t.get_text(), c.get_facecolor()[0].tolist()] for t, c in zip(ax.get_legend().get_texts(), ax.collections)]))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("0", "1", "6", "7")
    }
    assert len(runs) == 1
    ax = path_map_figure(pos_result()).axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 30


def test_the_analysis_package_does_not_import_matplotlib():
    code = (
        "import pkgutil, importlib, sys, routelens.analysis as a;"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(a.__path__, 'routelens.analysis.')];"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

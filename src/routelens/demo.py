"""`routelens demo`: everything routelens does, on a model it builds itself, in one command.

    corpus/   the embedded multi-domain corpus (code, prose, math, data)
    model/    a small Mixtral-architecture model trained on it (cached: reused when its
              training config is unchanged), with checkpoints/ along the way
    trace/    its routing over held-out text of every domain
    pos/      its routing over the prose domain, tagged with UPOS by spaCy when installed
    analysis.json, report.html (+ report_figures/)

Every step is the library function that the matching command calls, so the demo is also a
worked example of the Python API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from routelens.config import build_config, setting
from routelens.progress import status


@dataclass
class DemoConfig:
    out: Path = setting(Path("routelens-demo"), "Directory for corpus/, model/, trace/ and report.html.")
    trace_tokens: int = setting(60_000, "Tokens per domain to trace and analyze.")
    pos_tokens: int = setting(40_000, "Tokens of tagged prose to trace for the POS analyses.")
    saturation_tokens: int = setting(4_000, "Tokens per domain traced at each kept checkpoint (router saturation).")
    seq_len: int = setting(256, "Window length in tokens of the demo's traces.")
    steps: int | None = setting(
        None, "Training steps of the demo model.", shown_default="the tuned demo setting"
    )  # tests use a handful
    progress: bool = True

    def __post_init__(self):
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            from routelens.errors import RoutelensError

            raise RoutelensError(f"--out {self.out} is a file; give a directory for the demo.")


def _say(message: str, progress: bool) -> None:
    status(f"[bold cyan]demo[/] {message}", show=progress)


def run_demo(config: DemoConfig | None = None, **overrides) -> Path:
    """Build, train, trace, analyze and report; returns the path of report.html. Keyword
    overrides set DemoConfig fields, e.g. `run_demo(out="/tmp/demo", trace_tokens=20_000)`.

    `out` is locked for the run (`routelens.lock`); each step locks its own folder inside it
    (corpus/, model/, trace/, report.html), other outputs than `out`, so none refuses another."""
    from routelens.lock import output_lock

    config = build_config(DemoConfig, config, overrides)
    with output_lock(config.out, what="demo"):
        return _run_demo(config)


def _run_demo(config: DemoConfig) -> Path:
    """The body of `run_demo`, run with `config.out` locked."""
    from dataclasses import replace

    import routelens.trace
    from routelens.analysis import analyze, router_saturation, write_json
    from routelens.corpus.builtin import write_builtin_corpus
    from routelens.report import write_report
    from routelens.simulate import simulate_all, simulate_distinct
    from routelens.training import train as training

    out = config.out
    out.mkdir(parents=True, exist_ok=True)

    _say("writing the embedded corpus", config.progress)
    corpus = write_builtin_corpus(out / "corpus", progress=config.progress)
    specs = [f"{name}={path}" for name, path in corpus.items()]

    train_config = training.DEMO_CONFIG
    if config.steps is not None:  # a shorter run keeps checkpoints at the same proportions
        train_config = replace(train_config, steps=config.steps, checkpoint_every=max(1, config.steps // 4))
    model_dir = out / "model"
    if _trained_with(model_dir, train_config):
        _say(f"reusing the trained model in {model_dir}", config.progress)
    else:
        _say("training the demo model (about 4 minutes on 2 CPU cores)", config.progress)
        training.train(specs, model_dir, train_config, progress=config.progress)

    _say("tracing its routing", config.progress)
    trace = routelens.trace(
        str(model_dir),
        specs,
        out / "trace",
        seq_len=config.seq_len,
        max_tokens=config.trace_tokens,
        overwrite=True,
        progress=config.progress,
    )
    analysis = analyze(trace, progress=config.progress)

    pos_trace = _pos_trace(model_dir, corpus, out, config)
    if pos_trace is not None:
        from routelens.analysis.pos import analyze_pos

        analysis["pos"] = analyze_pos(pos_trace, progress=config.progress)

    # The last checkpoint holds the final weights: the final model stands for it.
    final_step = json.loads((model_dir / "training.json").read_text())["steps"]
    checkpoints = [c for c in sorted((model_dir / "checkpoints").glob("step-*")) if c.name != f"step-{final_step:06d}"]
    if checkpoints:
        _say(f"router saturation over {len(checkpoints)} checkpoints", config.progress)
        traces = [
            routelens.trace(
                str(ckpt),
                specs,
                out / "saturation" / ckpt.name,
                seq_len=config.seq_len,
                max_tokens=config.saturation_tokens,
                overwrite=True,
                progress=False,
            )
            for ckpt in [*checkpoints, model_dir]
        ]
        analysis["saturation"] = router_saturation(
            traces, labels=[c.name for c in checkpoints] + ["final"], progress=False
        )

    _say("simulating expert caching and expert-parallel load", config.progress)
    analysis.update(simulate_all(trace, devices=4, batch_tokens=1024, progress=config.progress))
    analysis.update(simulate_distinct(trace, batch=16))  # experts one decode batch of 16 sequences touches
    from routelens.pruning.importance import expert_importance

    analysis["importance"] = expert_importance(trace, progress=False)  # which experts a pruning would keep
    write_json(analysis, out / "analysis.json")
    report = write_report(trace, analysis, out / "report.html", progress=config.progress)
    return report


def _trained_with(model_dir: Path, train_config) -> bool:
    """True when model_dir holds a finished model trained with this config (training.json is written last)."""
    record = model_dir / "training.json"
    if not (record.is_file() and (model_dir / "config.json").is_file()):
        return False
    try:
        saved = json.loads(record.read_text()).get("config", {})
    except json.JSONDecodeError:
        return False
    return not train_config.differences(saved)


def _pos_trace(model_dir: Path, corpus: dict, out: Path, config: DemoConfig):
    """Trace the prose domain with spaCy UPOS tags, or None (with a note) when spaCy is absent."""
    from rich.markup import escape

    import routelens.trace
    from routelens.errors import RoutelensError

    try:
        from routelens.corpus.tagger import load_pipeline

        load_pipeline()
    except RoutelensError as exc:
        _say(f"[yellow]skipping the part-of-speech analyses: {escape(str(exc))}[/]", config.progress)
        return None
    _say("tagging prose with spaCy and tracing it for the part-of-speech analyses", config.progress)
    return routelens.trace(
        str(model_dir),
        [f"prose={corpus['prose']}"],
        out / "pos",
        seq_len=config.seq_len,
        max_tokens=config.pos_tokens,
        tagger="spacy",
        overwrite=True,
        progress=config.progress,
    )

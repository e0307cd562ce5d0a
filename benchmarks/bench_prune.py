"""What pruning by routing costs: held-out loss per domain of a trained MoE pruned to N experts per
layer by each criterion (reap, frequency, weighted) beside random choices (mean of several seeds).

    python benchmarks/bench_prune.py --model routelens-demo/model --corpus routelens-demo/corpus
    python benchmarks/bench_prune.py --model ds-moe/ --corpus routelens-demo/corpus --keep 6 4 --seeds 3

The model must come from `routelens train` (its training.json says which documents were held out).
Importance is measured on a trace of the *training* documents only (`--calib-tokens` per domain,
expert output norms included, so reap is defined); the loss is scored on the held-out documents,
which neither training nor the importance saw. Prints one markdown table per model (nats per token,
per domain and pooled, the pooled one with its standard error over held-out windows) and, for each
criterion, its paired difference from random at the same N (negative: better than random) with
its standard error: the paired one over windows combined with the spread of random's seeds (the
mean of S random draws is itself uncertain by sd / sqrt(S)); writes every number to
`--out`/results.json (`--render FILE` prints the tables of such a file again). The windows (seq_len tokens
of consecutive held-out documents) are the units: one model, one calibration set, so the errors say
how sure the held-out text makes us, not how another training run would come out.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

CRITERIA = ("reap", "frequency", "weighted", "random")


def ratio_se(nll, tokens) -> float:
    """Standard error of sum(nll) / sum(tokens) over independent windows (delta method)."""
    import numpy as np

    loss = nll.sum() / tokens.sum()
    w = len(nll)
    return float(np.sqrt(((nll - loss * tokens) ** 2).sum() * w / max(w - 1, 1)) / tokens.sum())


def per_window(parts: dict[str, list]):
    """(windows,) NLL sums and token counts, all domains in order."""
    import numpy as np

    rows = np.concatenate([np.concatenate(chunks) for chunks in parts.values()])
    return rows[:, 0], rows[:, 1]


def calibration_corpora(tokenizer, corpus_dir: Path, meta: dict, work: Path) -> tuple[list[str], list[str]]:
    """(SPECs of every domain's full text, SPECs of files holding only its training documents)."""
    from routelens.training.train_data import encode_documents, read_corpora, split_held_out

    names = sorted(p.stem for p in corpus_dir.glob("*.txt"))
    specs = [f"{d}={corpus_dir / (d + '.txt')}" for d in names]
    corpora = read_corpora(specs, min_docs=1)
    seed, val = int(meta["config"]["seed"]), int(meta["config"]["val_tokens"])
    calib = []
    for d in corpora.domains:
        docs = corpora.documents[d]
        train_idx, _ = split_held_out(encode_documents(tokenizer, docs), d, seed, val)
        path = work / f"calib-{d}.txt"
        path.write_text("\n\n".join(docs[i].replace("\n\n", "\n") for i in train_idx))  # one document per paragraph
        calib.append(f"{d}={path}")
    return specs, calib


def measure(
    model_dir: Path,
    corpus_dir: Path,
    work: Path,
    keeps: list[int],
    seeds: int,
    calib_tokens: int,
    eval_tokens: int | None,
) -> dict:
    import numpy as np

    import routelens
    from routelens.models.loading import load_model
    from routelens.pruning import expert_importance
    from routelens.pruning.ablation import domain_losses, eval_windows
    from routelens.pruning.checkpoint import kept_experts, prune_model
    from routelens.trace import TraceConfig

    meta = json.loads((model_dir / "training.json").read_text())
    model, tokenizer = load_model(model_dir, TraceConfig(dtype="float32", progress=False))
    work.mkdir(parents=True, exist_ok=True)
    specs, calib = calibration_corpora(tokenizer, corpus_dir, meta, work)
    trace = routelens.trace(
        model_dir,
        calib,
        work / "trace",
        seq_len=int(meta["config"]["seq_len"]),
        batch_size=16,
        max_tokens=calib_tokens,
        store_expert_norms=True,
        overwrite=True,
        progress=False,
    )
    importance = expert_importance(trace, progress=False)
    windows, _, held_out = eval_windows(tokenizer, specs, meta, held_out=True, max_tokens=eval_tokens)
    assert held_out, "the model's training.json names no held-out split"
    pad = tokenizer.pad_token_id or 0
    parts: dict[str, list] = {}
    rows = {"intact": domain_losses(model, windows, 32, pad, parts) | {"kept": None}}
    nll, tokens = per_window(parts)
    rows["intact"]["loss_se"] = ratio_se(nll, tokens)
    window_nll = {}
    for n in keeps:
        for criterion in CRITERIA:
            runs, seed_nll = [], []
            for seed in range(seeds if criterion == "random" else 1):
                pruned = copy.deepcopy(model)
                keep = kept_experts(model, importance, n, criterion, seed=seed)
                prune_model(pruned, keep)
                parts = {}
                runs.append(
                    domain_losses(pruned, windows, 32, pad, parts) | {"kept": {str(k): v for k, v in keep.items()}}
                )
                seed_nll.append(per_window(parts)[0])
                print(
                    f"  {model_dir.name}: {n} kept, {criterion} seed {seed}: loss {runs[-1]['loss']:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
            window_nll[n, criterion] = np.mean(seed_nll, axis=0)  # random: the mean over seeds, window by window
            rows[f"{n}/{criterion}"] = {
                "loss": float(np.mean([r["loss"] for r in runs])),
                "loss_se": ratio_se(window_nll[n, criterion], tokens),
                "loss_per_run": [r["loss"] for r in runs],
                "domains": {
                    d: {
                        "loss": float(np.mean([r["domains"][d]["loss"] for r in runs])),
                        "tokens": runs[0]["domains"][d]["tokens"],
                    }
                    for d in windows
                },
                "kept": [r["kept"] for r in runs],
            }
        for criterion in CRITERIA[:-1]:  # paired over the same windows: most of the window-to-window spread cancels
            diff = window_nll[n, criterion] - window_nll[n, "random"]
            rows[f"{n}/{criterion}"]["vs_random"] = float(diff.sum() / tokens.sum())
            rows[f"{n}/{criterion}"]["vs_random_se"] = ratio_se(diff, tokens)
    return {
        "model": str(model_dir),
        "architecture": meta["model"]["architecture"],
        "num_experts": trace.num_experts,
        "top_k": trace.top_k,
        "moe_layers": trace.layers,
        "calib_tokens_per_domain": calib_tokens,
        "rows": rows,
    }


def versus_random_se(rows: dict, name: str) -> float:
    """The s.e. of a criterion's difference from random: paired over windows, plus random's seed spread."""
    import numpy as np

    n = name.split("/")[0]
    draws = rows[f"{n}/random"]["loss_per_run"]
    seed_var = float(np.var(draws, ddof=1)) / len(draws) if len(draws) > 1 else 0.0
    return float(np.sqrt(rows[name]["vs_random_se"] ** 2 + seed_var))


def table(result: dict) -> str:
    rows = result["rows"]
    domains = list(rows["intact"]["domains"])
    lines = [
        f"{result['architecture']} ({result['model']}): top-{result['top_k']} of {result['num_experts']}, "
        f"MoE layers {result['moe_layers']}; held-out tokens per domain "
        + ", ".join(f"{d} {rows['intact']['domains'][d]['tokens']:,}" for d in domains),
        "",
        "| kept | criterion | " + " | ".join(domains) + " | all (± s.e.) | vs random (± s.e.) |",
        "|---|---|" + "---|" * (len(domains) + 2),
    ]
    best = {}
    for name, row in rows.items():
        if "/" in name:
            n = name.split("/")[0]
            best[n] = min(best.get(n, float("inf")), row["loss"])
    for name, row in rows.items():
        n, crit = name.split("/") if "/" in name else (str(result["num_experts"]), name)
        total = f"**{row['loss']:.3f}**" if best.get(n) == row["loss"] else f"{row['loss']:.3f}"
        total += f" ± {row['loss_se']:.3f}"
        versus = f"{row['vs_random']:+.3f} ± {versus_random_se(rows, name):.3f}" if "vs_random" in row else ""
        lines.append(
            f"| {n} | {crit} | "
            + " | ".join(f"{row['domains'][d]['loss']:.3f}" for d in domains)
            + f" | {total} | {versus} |"
        )
    spread = {n: rows[f"{n}/random"]["loss_per_run"] for n in best}
    lines += [
        "",
        "random seeds, pooled loss: "
        + "; ".join(f"{n} kept " + " / ".join(f"{v:.3f}" for v in runs) for n, runs in spread.items()),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, action="append", help="a model directory from `routelens train` (repeatable)"
    )
    parser.add_argument("--corpus", type=Path, help="the directory of DOMAIN.txt files it was trained on")
    parser.add_argument("--render", type=Path, help="only print the tables of a results.json this benchmark wrote")
    parser.add_argument("--keep", type=int, nargs="+", default=[6, 4], help="experts kept per layer (default 6 4)")
    parser.add_argument("--seeds", type=int, default=3, help="random draws averaged (default 3)")
    parser.add_argument(
        "--calib-tokens", type=int, default=20_000, help="calibration tokens per domain (default 20000)"
    )
    parser.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens per domain (default all)")
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    if args.render:
        for result in json.loads(args.render.read_text()):
            print(table(result) + "\n")
        return 0
    if not args.model or not args.corpus:
        parser.error("--model and --corpus are required (or --render FILE)")

    from routelens.progress import disable_progress_bars

    disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = []
        for i, model_dir in enumerate(args.model):
            results.append(
                measure(
                    model_dir,
                    args.corpus,
                    out / f"{i}-{model_dir.name}",
                    args.keep,
                    args.seeds,
                    args.calib_tokens,
                    args.eval_tokens,
                )
            )
            print(table(results[-1]) + "\n", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        if args.out:
            print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

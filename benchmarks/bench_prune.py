"""What pruning by routing costs: held-out loss per domain of a trained MoE pruned to N experts per
layer by each criterion (reap, frequency, weighted) beside random choices (mean of several seeds).

    python benchmarks/bench_prune.py --model routelens-demo/model --corpus routelens-demo/corpus
    python benchmarks/bench_prune.py --model ds-moe/ --corpus routelens-demo/corpus --keep 6 4 --seeds 3

The model must come from `routelens train` (its training.json says which documents were held out).
Importance is measured on a trace of the *training* documents only (`--calib-tokens` per domain,
expert output norms included, so reap is defined); the loss is scored on the held-out documents,
which neither training nor the importance saw. Prints one markdown table per model (nats per token,
per domain and pooled) and writes every number to `--out`/results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

CRITERIA = ("reap", "frequency", "weighted", "random")


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


def measure(model_dir: Path, corpus_dir: Path, work: Path, keeps: list[int], seeds: int, calib_tokens: int,
            eval_tokens: int | None) -> dict:  # fmt: skip
    import numpy as np

    import routelens
    from routelens.pruning import expert_importance
    from routelens.pruning.ablation import domain_losses, eval_windows
    from routelens.pruning.checkpoint import kept_experts, prune_model
    from routelens.trace import TraceConfig
    from routelens.trace.loading import load_model

    meta = json.loads((model_dir / "training.json").read_text())
    model, tokenizer = load_model(model_dir, TraceConfig(dtype="float32", progress=False))
    work.mkdir(parents=True, exist_ok=True)
    specs, calib = calibration_corpora(tokenizer, corpus_dir, meta, work)
    trace = routelens.trace(model_dir, calib, work / "trace", seq_len=int(meta["config"]["seq_len"]), batch_size=16,
                            max_tokens=calib_tokens, store_expert_norms=True, overwrite=True, progress=False)  # fmt: skip
    importance = expert_importance(trace, progress=False)
    windows, _, held_out = eval_windows(tokenizer, specs, meta, held_out=True, max_tokens=eval_tokens)
    assert held_out, "the model's training.json names no held-out split"
    pad = tokenizer.pad_token_id or 0
    rows = {"intact": domain_losses(model, windows, 32, pad) | {"kept": None}}
    for n in keeps:
        for criterion in CRITERIA:
            runs = []
            for seed in range(seeds if criterion == "random" else 1):
                pruned = copy.deepcopy(model)
                keep = kept_experts(model, importance, n, criterion, seed=seed)
                prune_model(pruned, keep)
                runs.append(domain_losses(pruned, windows, 32, pad) | {"kept": {str(k): v for k, v in keep.items()}})
                print(f"  {model_dir.name}: {n} kept, {criterion} seed {seed}: loss {runs[-1]['loss']:.4f}", file=sys.stderr, flush=True)
            rows[f"{n}/{criterion}"] = {
                "loss": float(np.mean([r["loss"] for r in runs])),
                "loss_per_run": [r["loss"] for r in runs],
                "domains": {d: {"loss": float(np.mean([r["domains"][d]["loss"] for r in runs])),
                                "tokens": runs[0]["domains"][d]["tokens"]} for d in windows},  # fmt: skip
                "kept": [r["kept"] for r in runs],
            }
    return {"model": str(model_dir), "architecture": meta["model"]["architecture"], "num_experts": trace.num_experts,
            "top_k": trace.top_k, "moe_layers": trace.layers, "calib_tokens_per_domain": calib_tokens, "rows": rows}  # fmt: skip


def table(result: dict) -> str:
    rows = result["rows"]
    domains = list(rows["intact"]["domains"])
    lines = [f"{result['architecture']} ({result['model']}): top-{result['top_k']} of {result['num_experts']}, "
             f"MoE layers {result['moe_layers']}; held-out tokens per domain "
             + ", ".join(f"{d} {rows['intact']['domains'][d]['tokens']:,}" for d in domains),  # fmt: skip
             "", "| kept | criterion | " + " | ".join(domains) + " | all |", "|---|---|" + "---|" * (len(domains) + 1)]
    best = {}
    for name, row in rows.items():
        if "/" in name:
            n = name.split("/")[0]
            best[n] = min(best.get(n, float("inf")), row["loss"])
    for name, row in rows.items():
        n, crit = name.split("/") if "/" in name else (str(result["num_experts"]), name)
        total = f"**{row['loss']:.3f}**" if best.get(n) == row["loss"] else f"{row['loss']:.3f}"
        lines.append(f"| {n} | {crit} | " + " | ".join(f"{row['domains'][d]['loss']:.3f}" for d in domains) + f" | {total} |")
    spread = {n: rows[f"{n}/random"]["loss_per_run"] for n in best}
    lines += ["", "random seeds, pooled loss: " + "; ".join(f"{n} kept " + " / ".join(f"{v:.3f}" for v in runs) for n, runs in spread.items())]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="a model directory from `routelens train` (repeatable)")
    parser.add_argument("--corpus", type=Path, required=True, help="the directory of DOMAIN.txt files it was trained on")
    parser.add_argument("--keep", type=int, nargs="+", default=[6, 4], help="experts kept per layer (default 6 4)")
    parser.add_argument("--seeds", type=int, default=3, help="random draws averaged (default 3)")
    parser.add_argument("--calib-tokens", type=int, default=20_000, help="calibration tokens per domain (default 20000)")
    parser.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens per domain (default all)")
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()

    from routelens.progress import disable_progress_bars

    disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = []
        for i, model_dir in enumerate(args.model):
            results.append(measure(model_dir, args.corpus, out / f"{i}-{model_dir.name}", args.keep, args.seeds,
                                   args.calib_tokens, args.eval_tokens))  # fmt: skip
            print(table(results[-1]) + "\n", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        if args.out:
            print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Learning-rate / warm-up sweep of a study preset: short runs of one variant, each merged and
scored on the offline suite beside the baselines, then one table (loss and quality per run).

    python benchmarks/study/sweep.py --preset smollm2-135m-study --variant m5 \
        --lr 1e-4,3e-4,1e-3 --steps 40 --warmup 4 --out benchmarks/results/sweep_m5.md

Runs go to runs/sweep/<preset>/<variant>-lr<lr>-w<warmup>-s<steps>/ (skipped when already
trained and scored, so the sweep restarts in parts); scores to runs/sweep/<preset>/bench.
Every number in the table comes from those files; the command line is written above it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolchain.atomic import write_text_atomic  # noqa: E402
from toolchain.baselines import get_baseline  # noqa: E402
from toolchain.bench.quality import category_means  # noqa: E402
from toolchain.paths import runs_dir  # noqa: E402
from toolchain.train.rundir import read_metrics  # noqa: E402

IN_DOMAIN = "WordNetDefinitionRetrieval"
BIN = Path(sys.executable).parent


def poolattn(*args: str) -> None:
    print("+ poolattn " + " ".join(args), flush=True)
    subprocess.run([str(BIN / "poolattn"), *args], check=True)


def general_mean(rows: list[dict], tasks: set[str]) -> float:
    """Mean main score over ``tasks`` (every task all runs have, but the in-domain one)."""
    scores = [r["score"] for r in rows if r["task"] in tasks]
    return sum(scores) / len(scores)


def run_one(args, lr: str, warmup: int, bench: Path) -> str:
    """Train, merge and score one sweep point (each step skipped when done); its label."""
    name = f"{args.variant}-lr{lr}-w{warmup}-s{args.steps}"
    run = runs_dir() / "sweep" / args.preset / name
    if not (run / "final" / "manifest.json").is_file():
        poolattn("train", "--preset", args.preset, "--variant", args.variant, "--run-dir", str(run),
                 "--lr", lr, "--warmup", str(warmup), "--steps", str(args.steps), *args.extra)
    if not (run / "merged" / "manifest.json").is_file():
        poolattn("merge", str(run))
    label = f"sweep/{name}"
    done = bench / "quality.json"
    if not done.is_file() or label not in json.loads(done.read_text())["models"]:
        poolattn("bench", "quality", str(run / "merged"), "--label", label, "--limit",
                 str(args.limit), "--shards", str(args.shards), "--merge", "--out", str(bench))
    return label


def table(args, labels: dict[str, tuple[str, int]], bench: Path) -> str:
    quality = json.loads((bench / "quality.json").read_text())["models"]
    common = set.intersection(*({r["task"] for r in e["rows"]} for e in quality.values()))
    common.discard(IN_DOMAIN)
    lines = [f"General = mean over {', '.join(sorted(common))}.", "",
             "| run | lr | warm-up | loss first 5 | loss last 10 | train s | general | "
             "WordNet | " + " | ".join(sorted(category_means(next(iter(quality.values()))["rows"])))
             + " |", "|---|---|---|---|---|---|---|---|" + "---|" * 4]
    reference = {k: v for k, v in quality.items() if k not in labels.values()}
    for label, entry in list(reference.items()) + [(lbl, quality[lbl]) for lbl in labels.values()]:
        rows = entry["rows"]
        wordnet = next((r["score"] for r in rows if r["task"] == IN_DOMAIN), float("nan"))
        cats = " | ".join(f"{v:.3f}" for _, v in sorted(category_means(rows).items()))
        lr, warmup, losses, seconds = "-", "-", "-", "-"
        for (lr_value, warm), lbl in labels.items():
            if lbl == label:
                metrics = read_metrics(runs_dir() / "sweep" / args.preset / label.split("/", 1)[1]
                                       / "metrics.jsonl")
                loss = [m["loss"] for m in metrics]
                lr, warmup = lr_value, str(warm)
                losses = f"{sum(loss[:5]) / 5:.3f} | {sum(loss[-10:]) / 10:.3f}"
                seconds = f"{metrics[-1]['elapsed_s']:.0f}"
        if losses == "-":
            losses = "- | -"
        lines.append(f"| {label} | {lr} | {warmup} | {losses} | {seconds} | "
                     f"{general_mean(rows, common):.4f} | {wordnet:.4f} | {cats} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smollm2-135m-study")
    p.add_argument("--variant", default="m5")
    p.add_argument("--lr", default="1e-4,3e-4,1e-3", help="comma-separated peak learning rates")
    p.add_argument("--warmup", default="4", help="comma-separated warm-up steps")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--shards", type=int, default=5)
    p.add_argument("--baselines", default="untrained-eos,untrained-mean,minilm-peer")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("extra", nargs="*", help="more `poolattn train` options (after --)")
    args = p.parse_args(argv)
    bench = runs_dir() / "sweep" / args.preset / "bench"
    started = time.time()
    baselines = [b for b in args.baselines.split(",") if b]
    for name in baselines:
        if not (runs_dir() / args.preset / name).is_dir():
            poolattn("baseline", "--preset", args.preset, name)
    scored = json.loads((bench / "quality.json").read_text())["models"] if \
        (bench / "quality.json").is_file() else {}
    for name in baselines:
        if f"baseline/{name}" not in scored:
            folder = get_baseline(name).profile  # merged/ or model/: the registry says
            poolattn("bench", "quality", str(runs_dir() / args.preset / name / folder), "--label",
                     f"baseline/{name}", "--limit", str(args.limit), "--shards", str(args.shards),
                     "--merge", "--out", str(bench))
    labels = {(lr, int(w)): run_one(args, lr, int(w), bench)
              for lr in args.lr.split(",") for w in args.warmup.split(",")}
    command = "python benchmarks/study/sweep.py " + " ".join(argv or sys.argv[1:])
    text = (f"# Sweep: {args.preset} {args.variant}, {args.steps} steps\n\nCommand: `{command}` "
            f"({time.time() - started:.0f} s this invocation; suite at limit {args.limit}).\n\n"
            f"{table(args, labels, bench)}\n")
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Assemble a study's record from its run directories: settings, training losses, per-stage
seconds, latency at one shape, then the paired tests against the paper (the Markdown that
`poolattn compare --paper ... --markdown` wrote).

    python benchmarks/study/record.py --preset smollm2-135m-study \
        --out runs/smollm2-135m-study/bench/study_record.md

Reads runs/<preset>/<variant>/{merged/, onnx-fp32/}, the training runs of each variant (its
soup's ingredients runs/<preset>/<variant>/seeds/d<k>/, or the variant dir itself:
train_config.json, metrics.jsonl) and runs/<preset>/bench/{report.json, study.md}; every number
comes from those files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolchain.atomic import read_manifest, write_text_atomic  # noqa: E402
from toolchain.bench.convergence import CONVERGED_BELOW, run_convergence  # noqa: E402
from toolchain.bench.convergence import training_runs as convergence_runs  # noqa: E402
from toolchain.errors import ToolchainError  # noqa: E402
from toolchain.paths import runs_dir  # noqa: E402
from toolchain.train.rundir import read_metrics  # noqa: E402

SETTINGS = ("steps", "batch_size", "negatives_per_query", "max_length", "lr", "warmup_steps",
            "zero_stage", "precision", "temperature", "seed")


def _json(path: Path) -> dict:
    if not path.is_file():
        raise ToolchainError(f"{path}: missing (run `make study` first)")
    return json.loads(path.read_text())


def training_runs(variant_dir: Path) -> list[Path]:
    """The training runs behind a variant: its soup's ingredients (seeds/d<k>), else itself."""
    return convergence_runs(variant_dir) or [variant_dir]


def training_rows(run: Path) -> dict:
    """Losses, seconds and the convergence test (toolchain.bench.convergence) of one run."""
    metrics = [m for m in read_metrics(run / "metrics.jsonl") if "loss" in m]
    if not metrics:
        raise ToolchainError(f"{run / 'metrics.jsonl'}: no training steps recorded")
    losses = [m["loss"] for m in metrics]
    k = min(3, len(losses))
    test = run_convergence(run)
    return {"steps": len(losses), "first": losses[0], "last": losses[-1],
            "first_mean": sum(losses[:k]) / k, "last_mean": sum(losses[-k:]) / k,
            "last_third": test.last_third_loss, "converged": test.converged,
            "threshold": test.threshold * test.chance, "grad_norm_first": metrics[0].get("grad_norm"),
            "candidates": metrics[-1].get("candidates"), "train_s": metrics[-1]["elapsed_s"]}


def source_losses(runs: list[Path]) -> dict[str, tuple[int, float, float]]:
    """Per training source: (batches per run, mean loss over its first third, over its last
    third, averaged over the runs) — sources differ in difficulty, so only a source against
    itself shows learning."""
    per_run: dict[str, list[tuple[int, float, float]]] = {}
    for run in runs:
        per: dict[str, list[float]] = {}
        for m in read_metrics(run / "metrics.jsonl"):
            if "loss" in m:
                per.setdefault(m.get("source", "data"), []).append(m["loss"])
        for name, losses in per.items():
            k = max(1, len(losses) // 3)
            per_run.setdefault(name, []).append((len(losses), sum(losses[:k]) / k,
                                                 sum(losses[-k:]) / k))
    return {name: (rows[0][0], sum(r[1] for r in rows) / len(rows),
                   sum(r[2] for r in rows) / len(rows)) for name, rows in per_run.items()}


def export_facts(run: Path) -> dict:
    """Merge gate and export/verify facts of one variant, from the artifacts' manifests."""
    merged = read_manifest(run / "merged", verify=False)
    merges = [read_manifest(Path(i["dir"]), verify=False)["merge"]
              for i in merged.get("soup", {}).get("ingredients", [])] or [merged["merge"]]
    onnx = read_manifest(run / "onnx-fp32", verify=False)
    verify = onnx["verify"]
    return {"merge_min_cos": min(m["gate"]["merged_vs_adapter"]["min_cosine"] for m in merges),
            "export_s": onnx["timings_s"]["export"], "verify": verify["passed"],
            "parity_max_abs": max(verify["parity_texts"]["max_abs"],
                                  verify["parity_random_shapes"]["max_abs"]),
            "attention": verify["attention_probe"]["observed"]}


def latency_at(report: dict, shape: str) -> dict[str, dict[str, float]]:
    """{variant: {runtime/profile: p50 ms}} at one batch x length shape."""
    out: dict[str, dict[str, float]] = {}
    for row in report["latency"]:
        if row["shape"] == shape:  # labels: <variant>/<profile> or <preset>/<run>/<profile>
            variant, profile = row["model"].split("/")[-2:]
            variant, profile = row.get("variant", variant), row.get("profile", profile)
            out.setdefault(variant, {})[profile] = row["p50_ms"]
    return out


def render(preset: str, variants: list[str], shape: str) -> str:
    root = runs_dir() / preset
    runs = {v: training_runs(root / v) for v in variants}
    config = _json(runs[variants[0]][0] / "train_config.json")
    train = {(v, run.name if len(runs[v]) > 1 else ""): training_rows(run)
             for v in variants for run in runs[v]}
    export = {v: export_facts(root / v) for v in variants}
    report = _json(root / "bench" / "report.json")
    quality = _json(root / "bench" / "quality.json")
    study = root / "bench" / "study.md"
    if not study.is_file():
        raise ToolchainError(f"{study}: missing (poolattn compare --paper ... --markdown)")
    latency = latency_at(report, shape)
    seconds = {m["variant"]: m["seconds"] for m in quality["models"].values()
               if m.get("role", "variant") == "variant"}
    settings = ", ".join(f"{k} {config[k]}" for k in SETTINGS if k in config)
    lora = config.get("lora", {})
    lines = [f"Preset `{preset}`: {settings}; LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, "
             f"dropout {lora.get('dropout')}; data "
             f"{', '.join(m['name'] for m in config['mixture']) if config.get('mixture') else config.get('data')}"
             f" (rows per source: {config.get('source_rows', '-')}).", "",
             "## Training (InfoNCE loss per step; chance = ln(candidates))", "",
             "Each variant is the soup (`poolattn soup`, the uniform weight average) of the runs "
             "listed for it, which share the initialisation (seed) and differ in data order and "
             "dropout (data seed d<k>)." if any(len(r) > 1 for r in runs.values()) else "", "",
             f"Converged (issue 29): the mean loss of the last third of a run's steps at most "
             f"{CONVERGED_BELOW} x ln(candidates); a variant converged when all its runs did.", "",
             "| variant | steps | candidates | loss step 1 | grad norm step 1 | loss last | "
             "mean first 3 | mean last 3 | mean last third | converged (limit) | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (v, seed), t in train.items():
        name = f"{v} {seed}" if seed else v
        norm = t["grad_norm_first"]
        lines.append(f"| {name} | {t['steps']} | {t['candidates']} | {t['first']:.3f} | "
                     f"{'-' if norm is None else f'{norm:.2f}'} | "
                     f"{t['last']:.3f} | {t['first_mean']:.3f} | {t['last_mean']:.3f} | "
                     f"{t['last_third']:.3f} | {'yes' if t['converged'] else 'NO'} "
                     f"({t['threshold']:.3f}) | {t['train_s']:.0f} |")
    per_source = {v: source_losses(runs[v]) for v in variants}
    sources = sorted({s for per in per_source.values() for s in per})
    if len(sources) > 1:
        lines += ["", "Loss per training source (batches per run; mean of its first third -> "
                  "last third of batches, averaged over the variant's runs):", "",
                  "| variant | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        for v, per in per_source.items():
            cells = [f"{per[s][0]}: {per[s][1]:.2f} -> {per[s][2]:.2f}" if s in per else "-"
                     for s in sources]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", f"## Merge, export, verify, quality seconds; latency p50 at {shape}", "",
              "| variant | merge min cos | export s | verify | max abs diff | attention | "
              "quality s | ORT fp32 ms | torch ms |", "|---|---|---|---|---|---|---|---|---|"]
    for v, e in export.items():
        lat = latency.get(v, {})
        ort, torch_ms = lat.get("onnx-fp32"), lat.get("merged")
        lines.append(f"| {v} | {e['merge_min_cos']:.7f} | {e['export_s']:.0f} | "
                     f"{'PASS' if e['verify'] else 'FAIL'} | {e['parity_max_abs']:.1e} | "
                     f"{e['attention']} | {seconds.get(v, float('nan')):.0f} | "
                     f"{'-' if ort is None else f'{ort:.1f}'} | "
                     f"{'-' if torch_ms is None else f'{torch_ms:.1f}'} |")
    lines += ["", study.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--variants", default="m1 m2 m3 m4 m5")
    p.add_argument("--shape", default="8x128", help="latency shape to quote (batch x length)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        text = render(args.preset, args.variants.split(), args.shape)
    except ToolchainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

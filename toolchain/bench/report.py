"""The benchmark report: report.json (everything), report.md (a rollout recommendation per task
family) and PNG plots, written atomically into runs/<preset>/bench/ (or any directory).
"""

from __future__ import annotations

import json
from pathlib import Path

from toolchain.atomic import write_text_atomic
from toolchain.bench.budget import format_violations
from toolchain.bench.compare import format_comparison, pair_scores, paired_test
from toolchain.bench.quality import format_quality, trained_only
from toolchain.bench.runtime_advice import runtime_advice

# The paper's trade-off splits along these families (Tang & Yang 2024): trainable multi-layer
# pooling helped STS and retrieval significantly but hurt clustering and classification.
FAMILIES: dict[str, tuple[str, ...]] = {
    "search/STS": ("retrieval", "sts", "reranking", "pairclassification", "summarization"),
    "clustering/classification": ("clustering", "classification", "multilabelclassification"),
}
BASELINE = "m1"


def family_of(category: str) -> str | None:
    key = category.lower().replace("_", "").replace("-", "").replace(" ", "")
    return next((f for f, cats in FAMILIES.items() if key in cats), None)


def reference_shape(split: list[dict]) -> str | None:
    """The shape cost is quoted at: 8x128 when measured, else the largest measured."""
    shapes = {r["shape"]: r["batch"] * r["seq_len"] for r in split}
    return "8x128" if "8x128" in shapes else max(shapes, key=shapes.get, default=None)


def mistral_7b_cost(analytic: list[dict], seq_len: int = 128) -> dict[str, dict[str, float]]:
    """{variant: {size: head % of a Mistral-7B backbone by FLOPs}} at the measured length
    closest to ``seq_len``."""
    rows = [r for r in analytic if r["shape"] == "mistral-7b"]
    if not rows:
        return {}
    length = min({r["seq_len"] for r in rows}, key=lambda t: abs(t - seq_len))
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["seq_len"] == length:
            out.setdefault(r["variant"], {})[r["size"]] = r["head_pct"]
            out[r["variant"]]["seq_len"] = length
    return out


def pairing_unit(quality: dict | None) -> str:
    """What one Wilcoxon pair is for these results: "shard" when the suite ran with
    ``--shards K`` (every row of every entry has K > 1 per-shard scores, as
    ``compare --unit shard`` needs), else "task"."""
    counts = {len(row.get("shard_scores") or ()) for entry in (quality or {}).values()
              for row in entry["rows"]}
    return "shard" if len(counts) == 1 and counts.pop() > 1 else "task"


def _baseline_label(quality: dict) -> str | None:
    """m1's label: its onnx-fp32 entry when there is one, else its first."""
    labels = [m for m, e in quality.items() if e["variant"] == BASELINE]
    return next((m for m in labels if quality[m]["profile"] == "onnx-fp32"),
                labels[0] if labels else None)


def family_points(quality: dict | None, split: list[dict],
                  analytic: list[dict] | None = None) -> list[dict]:
    """Per (variant, family): paired test vs m1 on the family's tasks (pairs by
    ``pairing_unit``: per shard when the suite ran sharded, else per task), the head's added
    ms and its FLOP share of a Mistral-7B backbone."""
    if not quality:
        return []
    unit = pairing_unit(quality)
    quality = trained_only(quality)  # baselines are references, not rollout candidates
    ref_shape = reference_shape(split)
    cost = {r["variant"]: r for r in split if r["shape"] == ref_shape}
    at_7b = mistral_7b_cost(analytic or [])
    base = _baseline_label(quality)
    if base is None:
        return []
    ref = pair_scores(base, quality[base], unit)
    points = []
    for model, entry in quality.items():
        if entry["variant"] == BASELINE or entry["profile"] != quality[base]["profile"]:
            continue
        mine = pair_scores(model, entry, unit)
        for family in FAMILIES:
            deltas = [score - ref[key][1] for key, (category, score) in mine.items()
                      if key in ref and family_of(category) == family]
            if not deltas:
                continue
            row = cost.get(entry["variant"], {})
            points.append({"variant": entry["variant"], "model": model, "family": family,
                           **paired_test(deltas), "unit": unit, "shape": ref_shape,
                           "added_ms": row.get("added_ms", 0.0),
                           "added_pct": row.get("added_pct"),
                           "mistral_7b": at_7b.get(entry["variant"], {})})
    return points


def recommend(points: list[dict], violations: list[dict]) -> dict[str, str]:
    """One sentence per family: roll out the best significant within-budget variant, or keep m1."""
    over = {v.get("variant") or v["subject"].split()[0].split("/")[0] for v in violations}
    advice = {}
    for family in FAMILIES:
        rows = [p for p in points if p["family"] == family]
        if not rows:
            advice[family] = "no quality results for this family: no recommendation."
            continue
        wins = sorted((p for p in rows if (p["mean_delta"] or 0) > 0),
                      key=lambda p: -p["mean_delta"])
        good = [p for p in wins if p["significant"] and p["variant"] not in over]
        hurts = [p["variant"] for p in rows if p["significant"] and p["mean_delta"] < 0]
        cost = (lambda p: f"+{p['added_ms']:.2f} ms/batch at {p['shape']}"
                + (f", {p['added_pct']:.1f}% of the backbone" if p["added_pct"] is not None else "")
                + _at_7b(p["mistral_7b"]))
        if good:
            best = good[0]
            text = (f"roll out {best['variant']}: {best['mean_delta']:+.4f} over {BASELINE} "
                    f"(p={best['p']:.3g}, n={best['n']}) for {cost(best)}.")
        elif wins:
            best = wins[0]
            why = ("over budget" if best["variant"] in over else
                   best["note"] or f"p={best['p']:.3g} is not below 0.05")
            text = (f"keep {BASELINE}: best candidate {best['variant']} is ahead by "
                    f"{best['mean_delta']:+.4f} but not proven ({why}); "
                    f"it would cost {cost(best)}.")
        else:
            least = max(rows, key=lambda p: p["mean_delta"] or 0)
            text = (f"keep {BASELINE}: no variant scores above it (closest: {least['variant']} "
                    f"{least['mean_delta']:+.4f}).")
        if hurts:
            text += f" Avoid {', '.join(sorted(hurts))} (significantly worse)."
        advice[family] = text
    return advice


def _at_7b(cost: dict) -> str:
    if "compact" not in cost:
        return ""
    return (f"; at Mistral-7B shape by FLOPs (T={cost['seq_len']}) its head is "
            f"{cost['compact']:.2f}% of the backbone compact, "
            f"{cost.get('paper', 0):.0f}% paper-size")


def markdown_table(columns: list[str], cells: list[list[str]]) -> str:
    """A Markdown table: a header of ``columns``, then one line per list of cell texts."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def latency_markdown(rows: list[dict]) -> str:
    columns = ["model", "runtime", "provider", "threads", "shape", "p50 ms", "p95 ms", "p99 ms",
               "texts/s", "tokens/s", "GFLOP/s"]
    return markdown_table(columns, [
        [str(r[k]) for k in ("model", "runtime", "provider", "threads", "shape")]
        + [f"{r[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")]
        + [f"{r['texts_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
           f"{r.get('achieved_gflops', float('nan')):.1f}"] for r in rows])


def speedup_markdown(rows: list[dict]) -> str:
    """p50 ratios per variant and shape: PyTorch eager / ORT fp32 and ORT fp32 / ORT int8."""
    p50 = {(r["variant"], r["profile"], r["shape"]): r["p50_ms"] for r in rows}
    cells = []
    for variant, shape in dict.fromkeys((r["variant"], r["shape"]) for r in rows):
        fp32 = p50.get((variant, "onnx-fp32", shape))
        eager, int8 = p50.get((variant, "merged", shape)), p50.get((variant, "onnx-int8", shape))
        cells.append([str(variant), shape, f"{eager / fp32:.2f}x" if fp32 and eager else "-",
                      f"{fp32 / int8:.2f}x" if fp32 and int8 else "-"])
    return markdown_table(["variant", "shape", "ORT fp32 vs eager", "int8 vs fp32"], cells)


def split_markdown(rows: list[dict]) -> str:
    columns = ["variant", "pooling", "threads", "shape", "backbone ms", "head ms", "eos_last ms",
               "added ms", "added %", "analytic head %"]
    return markdown_table(columns, [
        [str(r[k]) for k in ("variant", "pooling", "threads", "shape")]
        + [f"{r['backbone_p50_ms']:.2f}", f"{r['head_p50_ms']:.3f}",
           f"{r['eos_last_p50_ms']:.3f}", f"{r['added_ms']:+.3f}", f"{r['added_pct']:+.1f}",
           f"{r['analytic_head_pct']:.2f}"] for r in rows])


def analytic_markdown(rows: list[dict]) -> str:
    columns = ["variant", "shape", "T", "head size", "head GFLOP/text", "backbone GFLOP/text",
               "head % of backbone"]
    return markdown_table(columns, [
        [str(r[k]) for k in ("variant", "shape", "seq_len", "size")]
        + [f"{r['head_gflop_per_text']:.3f}", f"{r['backbone_gflop_per_text']:.1f}",
           f"{r['head_pct']:.2f}"] for r in rows])


def rows_at_length(rows: list[dict], seq_len: int) -> list[dict]:
    """Trainable-head rows at the measured length closest to ``seq_len``."""
    rows = [r for r in rows if r["per_text"] > 0]
    if not rows:
        return []
    length = min({r["seq_len"] for r in rows}, key=lambda t: abs(t - seq_len))
    return [r for r in rows if r["seq_len"] == length]


def render_markdown(report: dict) -> str:
    """The report as Markdown: recommendation first, then the evidence."""
    machine = report["machine"]
    out = [f"# Benchmark report: {report['preset']}", "",
           f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
           f"onnxruntime {machine['onnxruntime']}; threads "
           f"{report['settings']['threads'] or 'runtime default'} (cost split: "
           f"{report['settings'].get('split_threads') or 'same'}); "
           f"grid {report['settings']['grid']}, warm-up {report['settings']['warmup']}, "
           f"repeats {report['settings']['repeats']}.", "", "## Rollout recommendation", ""]
    out += [f"- **{family}**: {text}" for family, text in report["recommendations"].items()]
    budget = report.get("budget")
    if budget:
        out += ["", f"## Budget ({budget['file']}): {'PASS' if budget['passed'] else 'FAIL'}", ""]
        out += [format_violations(budget["violations"]) if budget["violations"]
                else "All limits met."]
    peak, limit = report.get("matmul_peak"), report.get("matmul_limit")
    machine = []
    if peak:
        machine.append(f"torch.mm {peak['size']}^2, {peak['threads']} threads: "
                       f"{peak['gflops']:.1f} GFLOP/s")
    if limit:
        machine.append(f"ONNX Runtime's fp32 MatMul limit (best single-MatMul graph up to "
                       f"4096^3): {limit['gflops']:.1f} GFLOP/s")
    peak_line = (f"Machine matmul peak ({'; '.join(machine)}); "
                 "GFLOP/s below = analytic FLOPs / p50.\n\n" if machine else "")
    isolation = ("Each runtime (ONNX Runtime, PyTorch eager) and the cost split timed in its own "
                 "fresh process, so no other runtime's thread pool competes; threads per row.\n\n")
    sections = [("Latency (full model)",
                 isolation + peak_line + latency_markdown(report["latency"])),
                ("Runtime speedups (p50 ratios)", speedup_markdown(report["latency"])),
                ("Cost split: head alone over eos_last", report["split_method"] + "\n\n"
                 + split_markdown(report["split"])),
                ("Analytic head cost at named model shapes",
                 "Per text, 128 tokens (every length in report.json); m1 has no head.\n\n"
                 + analytic_markdown(rows_at_length(report["analytic"], 128)))]
    if report.get("load"):
        from toolchain.bench.load_report import load_markdown

        sections.append(("Latency under load", load_markdown(report["load"])))
    if report.get("quality"):
        sections.append(("Quality (mean main score per category)",
                         format_quality(report["quality"])))
        unit = next((r.get("unit", "task") for r in report["compare"]), "task")
        sections.append((f"Paired Wilcoxon signed-rank vs m1 and the baselines (one pair per "
                         f"{unit})", format_comparison(report["compare"])))
    for title, body in sections:
        out += ["", f"## {title}", "", body]
    out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(out) + "\n"


def write_report(report: dict, out_dir: str | Path) -> dict:
    """Add recommendations and plots, then write report.json, report.md and PNGs to ``out_dir``.

    Files are written beside each other and renamed into place, so a reader never sees a
    half-written report.
    """
    from toolchain.bench.plots import plot_latency_vs_length, plot_quality_vs_latency

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    violations = (report.get("budget") or {}).get("violations", [])
    points = family_points(report.get("quality"), report["split"], report.get("analytic"))
    report["family_points"] = points
    report["pairing"] = pairing_unit(report.get("quality")) if report.get("quality") else None
    report["recommendations"] = recommend(points, violations)
    if advice := runtime_advice(report["latency"]):
        report["recommendations"]["runtime"] = advice
    plots = [plot_latency_vs_length(report["latency"], report["split"],
                                    out_dir / "latency_vs_length.png")]
    if points:
        plots.append(plot_quality_vs_latency(points, out_dir / "quality_vs_latency.png"))
    if report.get("load"):
        from toolchain.bench.plots import plot_p99_vs_rate

        plots.append(plot_p99_vs_rate(report["load"]["curves"], out_dir / "load_p99.png",
                                      report["load"]["p99_budget_ms"]))
    report["plots"] = [str(p) for p in plots]
    for name, text in (("report.json", json.dumps(report, indent=2, default=str) + "\n"),
                       ("report.md", render_markdown(report))):
        write_text_atomic(out_dir / name, text)
    return report

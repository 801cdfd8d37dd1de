"""Markdown and files of a load run: per-level table per artifact, the highest rate within the
p99 budget, the head's added latency under load, and saturation vs offline throughput."""

from __future__ import annotations

import json
from pathlib import Path

from toolchain.atomic import write_text_atomic
from toolchain.bench.load_runs import max_rate_within


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sizes(histogram: dict) -> str:
    return " ".join(f"{k}x{v}" for k, v in histogram.items()) or "-"


def levels_markdown(curve: dict) -> str:
    lines = ["| offered req/s | achieved req/s | sent | ok | errors | timeouts | mismatched | "
             "p50 ms | p95 ms | p99 ms | requests per batch (size x count) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in curve["levels"]:
        lines.append(f"| {lv['offered_rps']:g} | {lv['achieved_rps']:.1f} | {lv['sent']} | "
                     f"{lv['ok']} | {lv['errors']} | {lv['timeouts']} | {lv['mismatched']} | "
                     f"{_ms(lv['p50_ms'])} | {_ms(lv['p95_ms'])} | {_ms(lv['p99_ms'])} | "
                     f"{_sizes(lv['batch_requests'])} |")
    return "\n".join(lines)


def summary_markdown(curves: list[dict], p99_budget_ms: float) -> str:
    lines = [f"| model | threads | startup s | highest rate with p99 <= {p99_budget_ms:g} ms "
             f"(all answered) | saturation texts/s | offline Embedder texts/s | ratio |",
             "|---|---|---|---|---|---|---|"]
    for c in curves:
        best = max_rate_within(c["levels"], p99_budget_ms)
        sat, off = c.get("saturation"), c.get("offline")
        best_text = "none" if best is None else f"{best:g} req/s"
        sat_text = f"{sat['texts_per_s']:.0f}" if sat else "-"
        off_text = f"{off['texts_per_s']:.0f}" if off else "-"
        ratio = f"{c['saturation_vs_offline']:.2f}" if sat and off else "-"
        lines.append(f"| {c['model']} | {c['threads'] or 'all'} | {c['startup_s']:.1f} | "
                     f"{best_text} | {sat_text} | {off_text} | {ratio} |")
    return "\n".join(lines)


def head_markdown(rows: list[dict]) -> str:
    lines = ["| variant | offered req/s | added p50 ms under load | added p99 ms under load | "
             "single-call added ms (shape) |", "|---|---|---|---|---|"]
    for r in rows:
        single = ("-" if r["single_call_added_ms"] is None
                  else f"{r['single_call_added_ms']:.2f} ({r['single_call_shape']})")
        lines.append(f"| {r['variant']} | {r['offered_rps']:g} | {r['added_p50_ms']:+.1f} | "
                     f"{r['added_p99_ms']:+.1f} | {single} |")
    return "\n".join(lines)


def load_markdown(result: dict) -> str:
    """The whole load section: summary, head rows (when m1 was loaded too), each curve."""
    budget = result["p99_budget_ms"]
    parts = ["Open-loop Poisson arrivals on loopback (`poolattn bench load`); each level at most "
             f"{result['settings']['max_requests']} requests in "
             f"{result['settings']['max_seconds']:g} s, timeout "
             f"{result['settings']['timeout_s']:g} s, {result['settings']['texts_per_request']} "
             "text(s) per request drawn from "
             f"{result['texts_source']}; vectors checked against Embedder.open at cosine >= "
             "0.9999 (mismatched).", "", summary_markdown(result["curves"], budget)]
    if result.get("head"):
        parts += ["", "Head under load: p50/p99 minus m1's (eos_last) at the same offered rate, "
                  "beside the cost split's single-call added ms:", "",
                  head_markdown(result["head"])]
    for curve in result["curves"]:
        parts += ["", f"**{curve['model']}**", "", levels_markdown(curve)]
    return "\n".join(parts) + "\n"


def write_load(result: dict, out_dir: str | Path) -> list[Path]:
    """load.json, load.md and load_p99.png in ``out_dir``."""
    from toolchain.bench.plots import plot_p99_vs_rate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "load.json", json.dumps(result, indent=2, default=str) + "\n")
    write_text_atomic(out_dir / "load.md", load_markdown(result))
    plot = plot_p99_vs_rate(result["curves"], out_dir / "load_p99.png", result["p99_budget_ms"])
    return [out_dir / "load.json", out_dir / "load.md", plot]

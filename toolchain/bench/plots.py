"""PNG plots of a benchmark report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
from matplotlib import ticker  # noqa: E402


def _per_text_ms(row: dict, key: str = "p50_ms") -> float:
    return row[key] / row["batch"]


def plot_latency_vs_length(latency: list[dict], split: list[dict], path: Path) -> Path:
    """Left: full-model p50 per text vs sequence length, one line per model (variant/profile).
    Right: head alone (on cached features) and backbone alone vs sequence length per variant."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for model in sorted({r["model"] for r in latency}):
        rows = sorted((r for r in latency if r["model"] == model), key=lambda r: r["seq_len"])
        left.plot([r["seq_len"] for r in rows], [_per_text_ms(r) for r in rows], marker="o",
                  label=model, linestyle="-" if rows[0]["runtime"] == "onnx" else "--")
    left.set(xscale="log", yscale="log", xlabel="sequence length (tokens)",
             ylabel="p50 ms per text", title="Full model latency")
    for variant in sorted({r["variant"] for r in split}):
        rows = sorted((r for r in split if r["variant"] == variant), key=lambda r: r["seq_len"])
        xs = [r["seq_len"] for r in rows]
        right.plot(xs, [r["head_p50_ms"] / r["batch"] for r in rows], marker="o",
                   label=f"{variant} head ({rows[0]['pooling']})")
    if split:
        first = sorted((r for r in split if r["variant"] == split[0]["variant"]),
                       key=lambda r: r["seq_len"])
        right.plot([r["seq_len"] for r in first],
                   [r["backbone_p50_ms"] / r["batch"] for r in first],
                   color="black", linestyle=":", marker="s",
                   label=f"backbone alone ({split[0]['variant']})")
    right.set(xscale="log", yscale="log", xlabel="sequence length (tokens)",
              ylabel="p50 ms per text", title="Cost split (torch eager)")
    lengths = sorted({r["seq_len"] for r in latency + split})
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.set_xticks(lengths)
        for which in (axis.xaxis, axis.yaxis):
            which.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            which.set_minor_formatter(ticker.NullFormatter())
        if axis.lines:
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_quality_vs_latency(points: list[dict], path: Path) -> Path:
    """Quality delta vs m1 against the head's added latency, one marker per task family.

    Args:
        points: {variant, family, mean_delta, added_ms, significant}.
    """
    fig, axis = plt.subplots(figsize=(7, 5))
    markers: dict[str, str] = {}
    colors: dict[str, str] = {}
    for point in points:
        marker = markers.setdefault(point["family"], "os^Dv"[len(markers) % 5])
        color = colors.setdefault(point["variant"], f"C{len(colors) % 10}")
        axis.scatter(point["added_ms"], point["mean_delta"], marker=marker, s=70,
                     edgecolors=color, facecolors=color if point["significant"] else "none")
        axis.annotate(f"{point['variant']} ({point['family']})",
                      (point["added_ms"], point["mean_delta"]), textcoords="offset points",
                      xytext=(5, 4), fontsize=7)
    for family, marker in markers.items():
        axis.scatter([], [], marker=marker, edgecolors="black", facecolors="none", label=family)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    shape = points[0].get("shape") if points else None
    axis.set(xlabel=f"added latency of the head over eos_last (ms per batch {shape}, torch)",
             ylabel="mean quality delta vs m1 (main score)",
             title="Quality bought per millisecond (filled: p < 0.05)")
    axis.grid(True, alpha=0.3)
    if markers:
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

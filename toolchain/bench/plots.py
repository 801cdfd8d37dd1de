"""PNG plots of a benchmark report (matplotlib, Agg backend: no display needed).

Each plot has a ``draw_*`` function returning the figure (what tests inspect) and a ``plot_*``
one writing it to a PNG. Colours say the variant (fixed, so m3 is the same colour in every
panel and every report), line styles and markers say the runtime profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
from matplotlib import ticker  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from toolchain.bench.compare import ALPHA  # noqa: E402

VARIANT_ORDER = ("m1", "m2", "m3", "m4", "m5")
# the default cycle, then tab20b: labels beyond m1..m5 (baselines, pooling+attention runs) get
# colours of their own instead of wrapping onto a variant's
PALETTE = [f"C{i}" for i in range(10)] + [to_hex(c) for c in matplotlib.colormaps["tab20b"].colors]
PROFILE_STYLES: dict[str, tuple[object, str]] = {
    "onnx-fp32": ("-", "o"), "onnx-int8": ("--", "s"), "onnx-fp16": ("-.", "^"),
    "merged": (":", "D"), "eager": (":", "D"), "torch": (":", "D")}
EXTRA_STYLES: list[tuple[object, str]] = [((0, (1, 1)), "v"), ((0, (5, 1)), "P"),
                                          ((0, (3, 1, 1, 1, 1, 1)), "X"), ((0, (8, 3)), "*")]


def variant_colours(variants: Iterable[str]) -> dict[str, str]:
    """{variant: colour}: m1..m5 -> C0..C4 always, any other label (sorted) the next colours."""
    wanted = list(dict.fromkeys(variants))
    colours = {v: f"C{i}" for i, v in enumerate(VARIANT_ORDER)}
    others = sorted(set(wanted) - set(colours))
    colours.update({v: PALETTE[(len(VARIANT_ORDER) + i) % len(PALETTE)]
                    for i, v in enumerate(others)})
    return {v: colours[v] for v in wanted}


def profile_styles(profiles: Iterable[str]) -> dict[str, tuple[object, str]]:
    """{profile: (line style, marker)}: fixed for the known profiles, then EXTRA_STYLES."""
    wanted = list(dict.fromkeys(profiles))
    others = sorted(set(wanted) - set(PROFILE_STYLES))
    styles = {**PROFILE_STYLES,
              **{p: EXTRA_STYLES[i % len(EXTRA_STYLES)] for i, p in enumerate(others)}}
    return {p: styles[p] for p in wanted}


def _identity(row: dict) -> tuple[str, str]:
    """(variant, profile) of a latency row; the model label or runtime where they are missing."""
    return (row.get("variant") or row["model"],
            row.get("profile") or row.get("runtime") or "unknown")


def latency_line_styles(latency: list[dict],
                        split: list[dict] | None = None) -> dict[str, dict]:
    """{model: {variant, profile, color, linestyle, marker}} for the full-model latency lines;
    colours over the variants of both panels, so each keeps its colour in both."""
    identity = {r["model"]: _identity(r) for r in latency}
    colours = variant_colours([v for v, _ in identity.values()]
                              + [r["variant"] for r in split or []])
    styles = profile_styles(p for _, p in identity.values())
    return {model: {"variant": variant, "profile": profile, "color": colours[variant],
                    "linestyle": styles[profile][0], "marker": styles[profile][1]}
            for model, (variant, profile) in identity.items()}


def _per_text_ms(row: dict, key: str = "p50_ms") -> float:
    return row[key] / row["batch"]


def _by_length(rows: Iterable[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["seq_len"])


def _style_legend(axis, styles: dict[str, dict]) -> None:
    """One entry per variant (its colour) and one per profile (its line style and marker),
    not one per line: 5 variants x 3 profiles stay readable."""
    variants = {s["variant"]: s["color"] for s in styles.values()}
    profiles = {s["profile"]: (s["linestyle"], s["marker"]) for s in styles.values()}
    handles = [Line2D([], [], color=c, linewidth=3, label=v) for v, c in sorted(variants.items())]
    handles += [Line2D([], [], color="black", linestyle=ls, marker=m, label=p)
                for p, (ls, m) in sorted(profiles.items())]
    axis.legend(handles=handles, fontsize=7, ncol=2, title="colour: variant, line: profile",
                title_fontsize=7)


def draw_latency_vs_length(latency: list[dict], split: list[dict]) -> Figure:
    """Left: full-model p50 per text vs sequence length, one line per model (colour: variant,
    style: profile). Right: head alone (on cached features) and backbone alone per variant."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = latency_line_styles(latency, split)
    # the same set of variants as the left panel's colours, so the same colour each
    colours = variant_colours([s["variant"] for s in styles.values()]
                              + [r["variant"] for r in split])
    for model, style in sorted(styles.items()):
        rows = _by_length(r for r in latency if r["model"] == model)
        left.plot([r["seq_len"] for r in rows], [_per_text_ms(r) for r in rows],
                  color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
                  label=f"{style['variant']} {style['profile']}")
    left.set(xscale="log", yscale="log", xlabel="sequence length (tokens)",
             ylabel="p50 ms per text", title="Full model latency")
    for variant in sorted({r["variant"] for r in split}):
        rows = _by_length(r for r in split if r["variant"] == variant)
        right.plot([r["seq_len"] for r in rows], [r["head_p50_ms"] / r["batch"] for r in rows],
                   color=colours[variant], marker="o",
                   label=f"{variant} head ({rows[0]['pooling']})")
    if split:
        first = _by_length(r for r in split if r["variant"] == split[0]["variant"])
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
    if left.lines:
        _style_legend(left, styles)
    if right.lines:
        right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def significance_caption(points: list[dict]) -> str:
    """What a filled marker means and which pairs the Wilcoxon tests used, e.g.
    "filled: p < 0.05, Wilcoxon paired by shard (n=35)"."""
    unit = points[0].get("unit", "task") if points else "task"
    sizes = sorted({p["n"] for p in points if p.get("n")})
    n = "" if not sizes else f" (n={sizes[0]})" if len(sizes) == 1 else \
        f" (n={sizes[0]}-{sizes[-1]})"
    return f"filled: p < {ALPHA:g}, Wilcoxon paired by {unit}{n}"


def draw_quality_vs_latency(points: list[dict]) -> Figure:
    """Quality delta vs m1 against the head's added latency, one marker per task family,
    filled where the paired test is significant.

    Args:
        points: {variant, family, mean_delta, added_ms, significant, n, unit}.
    """
    fig, axis = plt.subplots(figsize=(7, 5))
    markers: dict[str, str] = {}
    colours = variant_colours(p["variant"] for p in points)
    for point in points:
        marker = markers.setdefault(point["family"], "os^Dv"[len(markers) % 5])
        colour = colours[point["variant"]]
        axis.scatter(point["added_ms"], point["mean_delta"], marker=marker, s=70,
                     edgecolors=colour, facecolors=colour if point["significant"] else "none")
        axis.annotate(f"{point['variant']} ({point['family']})",
                      (point["added_ms"], point["mean_delta"]), textcoords="offset points",
                      xytext=(5, 4), fontsize=7)
    for family, marker in markers.items():
        axis.scatter([], [], marker=marker, edgecolors="black", facecolors="none", label=family)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    shape = points[0].get("shape") if points else None
    axis.set(xlabel=f"added latency of the head over eos_last (ms per batch {shape}, torch)",
             ylabel="mean quality delta vs m1 (main score)",
             title=f"Quality bought per millisecond\n{significance_caption(points)}")
    axis.grid(True, alpha=0.3)
    if markers:
        axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency_vs_length(latency: list[dict], split: list[dict], path: Path) -> Path:
    """``draw_latency_vs_length`` written to ``path`` (PNG)."""
    return _save(draw_latency_vs_length(latency, split), path)


def plot_quality_vs_latency(points: list[dict], path: Path) -> Path:
    """``draw_quality_vs_latency`` written to ``path`` (PNG)."""
    return _save(draw_quality_vs_latency(points), path)


def draw_p99_vs_rate(curves: list[dict], p99_budget_ms: float | None = None) -> Figure:
    """p99 latency against offered request rate, one line per served artifact (colour: variant,
    style: profile); levels with failed requests drawn as crosses.

    Args:
        curves: ``toolchain.bench.load_runs.load_artifact`` results ({variant, profile,
            levels: [{offered_rps, p99_ms, ok, sent}]}).
    """
    fig, axis = plt.subplots(figsize=(7, 4.5))
    colours = variant_colours(c["variant"] for c in curves)
    styles = profile_styles(c["profile"] for c in curves)
    for curve in curves:
        levels = [lv for lv in curve["levels"] if lv["p99_ms"] is not None]
        line, marker = styles[curve["profile"]]
        axis.plot([lv["offered_rps"] for lv in levels], [lv["p99_ms"] for lv in levels],
                  linestyle=line, marker=marker, color=colours[curve["variant"]],
                  label=f"{curve['variant']} {curve['profile']}")
        failed = [lv for lv in levels if lv["ok"] < lv["sent"]]
        axis.scatter([lv["offered_rps"] for lv in failed], [lv["p99_ms"] for lv in failed],
                     marker="x", s=80, color="black", zorder=3)
    if p99_budget_ms is not None:
        axis.axhline(p99_budget_ms, color="grey", linestyle="--", linewidth=0.8,
                     label=f"p99 budget {p99_budget_ms:g} ms")
    axis.set(xlabel="offered rate (requests/s, Poisson)", ylabel="p99 latency (ms)",
             title="Latency under load (x: level with errors, timeouts or mismatches)")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    if curves:
        axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_p99_vs_rate(curves: list[dict], path: Path, p99_budget_ms: float | None = None) -> Path:
    """``draw_p99_vs_rate`` written to ``path`` (PNG)."""
    return _save(draw_p99_vs_rate(curves, p99_budget_ms), path)

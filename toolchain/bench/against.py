"""Every trained variant against several baselines at once (m1, the untrained backbone, the
MiniLM peer), the mean score with and without the in-domain task, and per-task gaps to the peer.

The tests themselves are ``toolchain.bench.compare.compare_models``, one call per baseline.
"""

from __future__ import annotations

from typing import Sequence

from toolchain.bench.compare import (EXCLUDED, pick_base, baseline_entries, compare_models,
                                     format_comparison)
from toolchain.bench.quality import format_overall, overall_means, role_of
from toolchain.errors import ToolchainError


def compare_against(quality: dict, baselines: Sequence[str], unit: str = "task",
                    exclude_tasks: Sequence[str] = ()) -> dict[str, list[dict]]:
    """{baseline: compare rows} for each baseline, in the order given.

    Raises:
        ToolchainError: a baseline given twice or absent from the results.
    """
    if len(set(baselines)) != len(baselines):
        raise ToolchainError(f"baseline given twice: {list(baselines)}")
    return {b: compare_models(quality, b, unit=unit, exclude_tasks=tuple(exclude_tasks))
            for b in baselines}


def peer_reference(quality: dict, peer: str | None = None) -> list[str]:
    """Labels of the peer: ``peer`` (a label or run name, required to exist) or, by default,
    every entry whose role is "peer" (none: no gap table)."""
    if peer is None:
        return [m for m, e in quality.items() if role_of(e) == "peer"]
    found = baseline_entries(quality, peer)
    if not found:
        raise ToolchainError(f"no results for peer {peer!r}; have: {', '.join(sorted(quality))}")
    return found


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def peer_gaps(quality: dict, peers: list[str], exclude_tasks: Sequence[str] = ()) -> list[dict]:
    """Per trained model and task: its score, the peer's, gap = model - peer; then the two
    overall means ("overall", ``EXCLUDED``) over the tasks both have."""
    if not peers:
        return []
    rows = []
    for model, entry in sorted(quality.items()):
        if role_of(entry) != "variant":
            continue
        peer = pick_base(entry, peers, quality)
        ref = {r["task"]: float(r["score"]) for r in quality[peer]["rows"]}
        mine = [r for r in entry["rows"] if r["task"] in ref]
        for r in mine:
            rows.append({"model": model, "peer": peer, "task": r["task"],
                         "category": r["category"], "score": float(r["score"]),
                         "peer_score": ref[r["task"]], "gap": float(r["score"]) - ref[r["task"]]})
        for name, kept in (("overall", mine),
                           (EXCLUDED, [r for r in mine if r["task"] not in set(exclude_tasks)])):
            score = _mean([float(r["score"]) for r in kept])
            base = _mean([ref[r["task"]] for r in kept])
            rows.append({"model": model, "peer": peer, "task": name, "category": "-",
                         "score": score, "peer_score": base,
                         "gap": None if score is None else score - base})
    return rows


def format_peer_gaps(rows: list[dict]) -> str:
    """Markdown: model, task, category, model score, peer score, gap."""
    def cell(x):
        return "-" if x is None else f"{x:.4f}"

    lines = ["| model | task | category | score | peer score | gap |", "|---|---|---|---|---|---|"]
    for r in rows:
        gap = "-" if r["gap"] is None else f"{r['gap']:+.4f}"
        lines.append(f"| {r['model']} | {r['task']} | {r['category']} | {cell(r['score'])} | "
                     f"{cell(r['peer_score'])} | {gap} |")
    return "\n".join(lines)


def against_markdown(quality: dict, baselines: Sequence[str], units: Sequence[str],
                     exclude_tasks: Sequence[str] = (), peer: str | None = None) -> str:
    """Sections: one paired-test table per baseline and unit, mean scores with and without
    the excluded tasks, and the gap table to the peer (when one is in the results)."""
    excluded = ", ".join(exclude_tasks) or "none"
    out = []
    for unit in units:
        for baseline, rows in compare_against(quality, baselines, unit, exclude_tasks).items():
            out += [f"## Paired Wilcoxon signed-rank vs {baseline}, one pair per {unit}", "",
                    format_comparison(rows), ""]
    out += [f"## Mean main score over tasks (excluded as in-domain: {excluded})", "",
            format_overall(overall_means(quality, exclude_tasks), exclude_tasks), ""]
    peers = peer_reference(quality, peer)
    if peers:
        out += [f"## Gap to the peer ({', '.join(peers)}): model score - peer score", "",
                format_peer_gaps(peer_gaps(quality, peers, exclude_tasks)), ""]
    return "\n".join(out)

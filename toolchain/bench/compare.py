"""Paired Wilcoxon signed-rank tests of each variant against a baseline (m1) across tasks.

The pairs are per-task main scores of two models on the same tasks (as in the paper), or with
``unit="shard"`` per-shard scores (``poolattn bench quality --shards K``: each task's evaluation
examples cut into K disjoint shards), which tests within this suite's tasks rather than across
a population of tasks, but gives a category with one task K pairs instead of one. Zero
differences are dropped (``zero_method="wilcox"``, the textbook test), so ``n_nonzero`` is the
test's sample size. A two-sided exact test over k non-zero pairs cannot give p below 2 / 2**k;
for k < 6 that floor is >= 0.0625, so no p-value is reported, only the note saying so. With ties
or zeros scipy's ``method="auto"`` uses exhaustive permutations (k <= 13) or the normal
approximation; the method used is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from toolchain.errors import ToolchainError

ALPHA = 0.05
MIN_PAIRS = 6  # smallest k with 2 / 2**k < ALPHA
ZERO = 1e-12  # |delta| below this is a tie with the baseline (float noise of equal scores)


def min_attainable_p(k: int) -> float:
    """Smallest two-sided p an exact signed-rank test can give with k non-zero pairs."""
    return min(1.0, 2.0 / 2 ** k) if k > 0 else 1.0


def _method(deltas: np.ndarray) -> str:
    nonzero = deltas[deltas != 0]
    clean = len(np.unique(np.abs(nonzero))) == len(nonzero) and len(nonzero) == len(deltas)
    if clean:
        return "exact" if len(deltas) <= 50 else "asymptotic"
    return "permutation" if len(deltas) <= 13 else "asymptotic"


def paired_test(deltas: list[float]) -> dict:
    """Wilcoxon signed-rank test of paired differences (variant - baseline).

    Returns:
        {n, n_nonzero, n_ties, mean_delta, statistic, p, method, significant, note}; ``p`` is
        None when there is nothing to test or the test cannot reach ``ALPHA``.
    """
    d = np.asarray(deltas, dtype=np.float64)
    d[np.abs(d) < ZERO] = 0.0
    nonzero = d[d != 0]
    abs_values = np.abs(nonzero)
    result = {"n": int(d.size), "n_nonzero": int(nonzero.size),
              "n_ties": int(nonzero.size - np.unique(abs_values).size),
              "mean_delta": float(d.mean()) if d.size else None,
              "statistic": None, "p": None, "method": None, "significant": False, "note": ""}
    if d.size == 0:
        result["note"] = "no tasks in common with the baseline"
        return result
    if nonzero.size == 0:
        result["note"] = "all paired differences are zero: identical scores, nothing to test"
        return result
    test = wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    result["statistic"] = float(test.statistic)
    result["method"] = _method(d)
    if nonzero.size < MIN_PAIRS:
        result["note"] = (f"n={nonzero.size} non-zero pairs: a two-sided exact test cannot reach "
                          f"p<{ALPHA} (smallest possible p = {min_attainable_p(nonzero.size):.4g})")
        return result
    result["p"] = float(test.pvalue)
    result["significant"] = bool(test.pvalue < ALPHA)
    if result["n_ties"] or nonzero.size < d.size:
        result["note"] = (f"{d.size - nonzero.size} zero and {result['n_ties']} tied differences; "
                          f"p by {result['method']}")
    return result


UNITS = ("task", "shard")


def _scores(model: str, entry: dict, unit: str) -> dict[tuple, tuple[str, float]]:
    """{pair key: (category, score)}: one key per task, or per (task, shard index)."""
    if unit == "task":
        return {(row["task"],): (row["category"], float(row["score"])) for row in entry["rows"]}
    out = {}
    for row in entry["rows"]:
        if "shard_scores" not in row:
            raise ToolchainError(f"{model}: task {row['task']} has no per-shard scores; "
                                 "evaluate with `poolattn bench quality --shards K`")
        out.update({(row["task"], i): (row["category"], float(s))
                    for i, s in enumerate(row["shard_scores"])})
    return out


def compare_models(quality: dict, baseline: str = "m1", unit: str = "task") -> list[dict]:
    """Test every model against the baseline variant with the same profile, per category and
    overall.

    Args:
        quality: ``{model: {"variant", "profile", "rows": [{task, category, score, ...}]}}``
            (rows carry "shard_scores" for ``unit="shard"``).
        baseline: variant name of the reference (m1: EOS-last pooling).
        unit: what one pair is: "task" (default, as in the paper) or "shard".

    Returns:
        Rows {model, variant, profile, baseline, category, unit, ...paired_test fields};
        category "overall" pools every pair.

    Raises:
        ToolchainError: no model of the baseline variant, an unknown unit, or shard pairs
            asked of results without per-shard scores.
    """
    if unit not in UNITS:
        raise ToolchainError(f"unknown pairing unit {unit!r}; known: {', '.join(UNITS)}")
    bases = {e.get("profile"): m for m, e in quality.items() if e.get("variant") == baseline}
    if not bases:
        raise ToolchainError(f"no results for baseline variant {baseline!r}; have: "
                             f"{', '.join(sorted(quality)) or 'none'}")
    rows = []
    for model, entry in sorted(quality.items()):
        base = bases.get(entry.get("profile")) or next(iter(bases.values()))
        if entry.get("variant") == baseline and base == model:
            continue
        mine, ref = _scores(model, entry, unit), _scores(base, quality[base], unit)
        common = sorted(set(mine) & set(ref))
        categories = sorted({mine[k][0] for k in common})
        for category in categories + ["overall"]:
            keys = [k for k in common if category == "overall" or mine[k][0] == category]
            deltas = [mine[k][1] - ref[k][1] for k in keys]
            rows.append({"model": model, "variant": entry.get("variant"),
                         "profile": entry.get("profile"), "baseline": base,
                         "category": category, "unit": unit, **paired_test(deltas)})
    return rows


def load_quality(paths: list[str | Path]) -> dict:
    """Merge quality summaries (``quality.json`` files, or directories holding one).

    Raises:
        ToolchainError: missing file, invalid JSON, no "models" key, or a model in two files.
    """
    merged: dict = {}
    for raw in paths:
        path = Path(raw)
        path = path / "quality.json" if path.is_dir() else path
        if not path.is_file():
            raise ToolchainError(f"{path}: no quality summary (run `poolattn bench quality`)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ToolchainError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ToolchainError(f"{path}: expected a quality summary with a 'models' mapping")
        for model, entry in data["models"].items():
            if model in merged:
                raise ToolchainError(f"{path}: model {model!r} also in another results file")
            merged[model] = entry
    return merged


def format_comparison(rows: list[dict]) -> str:
    """A Markdown table of comparison rows."""
    lines = ["| model | vs | category | pairs | n | mean delta | W | p | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stat = "-" if r["statistic"] is None else f"{r['statistic']:.1f}"
        p = "-" if r["p"] is None else f"{r['p']:.4f}" + (" *" if r["significant"] else "")
        delta = "-" if r["mean_delta"] is None else f"{r['mean_delta']:+.4f}"
        lines.append(f"| {r['model']} | {r['baseline']} | {r['category']} "
                     f"| {r.get('unit', 'task')}s | {r['n']} | {delta} | {stat} | {p} "
                     f"| {r['note']} |")
    return "\n".join(lines)

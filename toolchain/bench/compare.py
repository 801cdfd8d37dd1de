"""Paired Wilcoxon signed-rank tests of each trained variant against a baseline (m1, or the
untrained backbone and the MiniLM peer of ``toolchain.baselines``) across tasks.

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

from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from toolchain.atomic import read_json
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


def pair_scores(model: str, entry: dict, unit: str) -> dict[tuple, tuple[str, float]]:
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


IN_DOMAIN_TASKS = ("WordNetDefinitionRetrieval",)  # the training data's domain (WordNet)
EXCLUDED = "overall excl. in-domain"


def _role(entry: dict) -> str:
    return str(entry.get("role", "variant"))


def baseline_entries(quality: dict, baseline: str) -> list[str]:
    """Labels a baseline name stands for: a label itself, a run, or a variant name."""
    if baseline in quality:
        return [baseline]
    return [m for m, e in quality.items()
            if baseline in (e.get("run"), e.get("variant"))]


def pick_base(entry: dict, candidates: list[str], quality: dict) -> str:
    """The candidate closest to ``entry``: same preset and profile first, then same preset,
    then same profile, then the first."""
    def score(label: str) -> tuple[int, int]:
        other = quality[label]
        return (other.get("preset") == entry.get("preset"),
                other.get("profile") == entry.get("profile"))
    return max(candidates, key=score)  # max keeps the first of equal scores


def _check_comparable(model: str, entry: dict, base: str, ref: dict, unit: str) -> None:
    if "limit" in entry and "limit" in ref and entry["limit"] != ref["limit"]:
        raise ToolchainError(f"{model} was evaluated at limit {entry['limit']}, {base} at "
                             f"{ref['limit']}: their scores are not paired")
    if unit == "shard" and "shards" in entry and "shards" in ref and \
            entry["shards"] != ref["shards"]:
        raise ToolchainError(f"{model} has {entry['shards']} shards a task, {base} "
                             f"{ref['shards']}: shard pairs would not match")


def compare_models(quality: dict, baseline: str = "m1", unit: str = "task",
                   exclude_tasks: tuple[str, ...] | list[str] | None = None) -> list[dict]:
    """Test every trained model against the baseline, per category and overall.

    Args:
        quality: ``{label: {"variant", "profile", "rows": [{task, category, score, ...}]}}``
            (rows carry "shard_scores" for ``unit="shard"``; "role" marks baselines, whose
            entries are references only, never tested themselves).
        baseline: a label, a run name (``untrained-mean``) or a variant name (``m1``); of
            several matching entries each model gets the one of its own preset and profile.
        unit: what one pair is: "task" (default, as in the paper) or "shard".
        exclude_tasks: when any of these tasks is in the results, also a category
            ``EXCLUDED``: every pair except those of these tasks (the training domain).

    Returns:
        Rows {model, variant, profile, baseline, category, unit, ...paired_test fields};
        category "overall" pools every pair.

    Raises:
        ToolchainError: no entry for the baseline, an unknown unit, results evaluated at
            different limits, or shard pairs asked of results without per-shard scores.
    """
    if unit not in UNITS:
        raise ToolchainError(f"unknown pairing unit {unit!r}; known: {', '.join(UNITS)}")
    candidates = baseline_entries(quality, baseline)
    if not candidates:
        raise ToolchainError(f"no results for baseline {baseline!r} (a label, run or variant); "
                             f"have: {', '.join(sorted(quality)) or 'none'}")
    excluded = set(exclude_tasks or ())
    rows = []
    for model, entry in sorted(quality.items()):
        if model in candidates or _role(entry) != "variant":
            continue
        base = pick_base(entry, candidates, quality)
        _check_comparable(model, entry, base, quality[base], unit)
        mine, ref = pair_scores(model, entry, unit), pair_scores(base, quality[base], unit)
        common = sorted(set(mine) & set(ref))
        categories = sorted({mine[k][0] for k in common})
        groups = [(c, [k for k in common if mine[k][0] == c]) for c in categories]
        groups.append(("overall", common))
        if any(k[0] in excluded for k in common):  # else it would repeat "overall"
            groups.append((EXCLUDED, [k for k in common if k[0] not in excluded]))
        for category, keys in groups:
            deltas = [mine[k][1] - ref[k][1] for k in keys]
            rows.append({"model": model, "variant": entry.get("variant"),
                         "profile": entry.get("profile"), "baseline": base,
                         "category": category, "unit": unit, **paired_test(deltas)})
    return rows


def load_quality(paths: list[str | Path]) -> dict:
    """Merge quality summaries (``quality.json`` files, or directories holding one).

    Each entry gets the file's ``limit`` and ``shards`` where it lacks them (so results of
    different settings are not paired) and ``results_file``.

    Raises:
        ToolchainError: missing file, invalid JSON, no "models" key, or one label in two
            files (naming both files and artifacts).
    """
    merged: dict = {}
    for raw in paths:
        path = Path(raw)
        path = path / "quality.json" if path.is_dir() else path
        if not path.is_file():
            raise ToolchainError(f"{path}: no quality summary (run `poolattn bench quality`)")
        data = read_json(path, "quality summary")
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ToolchainError(f"{path}: expected a quality summary with a 'models' mapping")
        for model, entry in data["models"].items():
            if model in merged:
                other = merged[model]
                raise ToolchainError(
                    f"label collision: {model!r} is in {other['results_file']} "
                    f"({other.get('artifact', '?')}) and in {path} ({entry.get('artifact', '?')}); "
                    f"evaluate one of them with `poolattn bench quality --label`")
            merged[model] = {"limit": data.get("limit"), "shards": data.get("shards", 1),
                             **entry, "results_file": str(path)}
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

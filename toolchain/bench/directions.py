"""Hold a comparison against a paper's findings: per variant and category, did our mean delta
vs the baseline go the paper's way, and was our paired test significant?

The paper's side is a data file (``benchmarks/study/paper_directions.yaml``)::

    source: Tang & Yang 2024 ...
    baseline: m1
    deltas:
      m5:
        sts: {delta: 0.0166, significant: true}

Our side is ``compare_models`` rows, one list per pairing unit (tasks, shards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from toolchain.bench.compare import EXCLUDED, compare_models, format_comparison, min_attainable_p
from toolchain.bench.convergence import Convergence, convergence_markdown, quality_convergence
from toolchain.errors import ToolchainError
from toolchain.yamlfile import read_yaml_mapping


@dataclass(frozen=True)
class PaperFinding:
    """One cell of the paper's table: the mean delta vs the baseline and its significance."""

    delta: float
    significant: bool


@dataclass(frozen=True)
class PaperDirections:
    """The paper's findings: ``deltas[variant][category]``; missing cells: none listed."""

    source: str
    baseline: str
    deltas: dict[str, dict[str, PaperFinding]]
    path: Path | None = None


def _finding(raw, where: str) -> PaperFinding:
    if not isinstance(raw, dict) or set(raw) != {"delta", "significant"}:
        raise ToolchainError(f"{where}: expected {{delta: NUMBER, significant: BOOL}}, got {raw!r}")
    delta, significant = raw["delta"], raw["significant"]
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta):
        raise ToolchainError(f"{where}.delta: must be a finite number, got {delta!r}")
    if not isinstance(significant, bool):
        raise ToolchainError(f"{where}.significant: must be true or false, got {significant!r}")
    return PaperFinding(float(delta), significant)


def load_directions(path: str | Path) -> PaperDirections:
    """Read a paper-directions file.

    Raises:
        ToolchainError: missing file, invalid YAML (with line), or a missing / mistyped field
            (named as ``deltas.<variant>.<category>.<field>``).
    """
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"{path}: no such paper-directions file")
    data = read_yaml_mapping(path)
    for key in ("source", "baseline", "deltas"):
        if key not in data:
            raise ToolchainError(f"{path}: missing field {key!r}")
    if not isinstance(data["deltas"], dict) or not data["deltas"]:
        raise ToolchainError(f"{path}: field 'deltas' must map variants to categories")
    deltas: dict[str, dict[str, PaperFinding]] = {}
    for variant, cells in data["deltas"].items():
        if not isinstance(cells, dict):
            raise ToolchainError(f"{path}: deltas.{variant}: must map categories to findings")
        deltas[str(variant)] = {str(c): _finding(raw, f"{path}: deltas.{variant}.{c}")
                                for c, raw in cells.items()}
    return PaperDirections(str(data["source"]), str(data["baseline"]), deltas, path)


NOT_CONVERGED = "not converged"


def verdict(ours: dict | None, paper: PaperFinding | None,
            unconverged: tuple[str, ...] = ()) -> str:
    """How one of our comparison rows stands against the paper's cell, in words.

    ``unconverged``: the variant and/or baseline whose training did not converge
    (toolchain.bench.convergence); then the delta measures how far training got, not the
    design, and the verdict says so instead of a direction.
    """
    if ours is None or ours["mean_delta"] is None:
        return "no result"
    if unconverged:
        return f"{NOT_CONVERGED} ({', '.join(unconverged)})"
    delta, sig = ours["mean_delta"], ours["significant"]
    if abs(delta) < 1e-12:
        return "no difference"
    if paper is None:
        return "significant where the paper lists no delta" if sig else "paper lists none"
    same = (delta > 0) == (paper.delta > 0)
    if same:
        return "agrees, significant" if sig else "same direction, not significant"
    return "contradicts, significant" if sig else "opposite direction, not significant"


def directions_table(rows_by_unit: dict[str, list[dict]], paper: PaperDirections,
                     converged: dict[str, bool | None] | None = None) -> list[dict]:
    """One row per (variant, category) seen in our comparison or the paper's table.

    Args:
        rows_by_unit: ``{"task": compare rows, "shard": compare rows}`` (either may be absent),
            from ``compare_models(..., baseline=paper.baseline)``.
        paper: the loaded directions file.
        converged: {variant name: True / False / None (unknown)}; a row whose variant or
            baseline is False gets the verdict "not converged (...)".

    Returns:
        Rows {variant, category, paper: PaperFinding | None, ours: {unit: row}, verdicts:
        {unit: str}}, variants and categories sorted ("overall" last).
    """
    ours: dict[tuple[str, str], dict[str, dict]] = {}
    for unit, rows in rows_by_unit.items():
        for row in rows:
            if row["category"] == EXCLUDED:  # ours only: the paper has no such column
                continue
            ours.setdefault((row["variant"], row["category"]), {})[unit] = row
    keys = set(ours) | {(v, c) for v, cells in paper.deltas.items() for c in cells}
    table = []
    for variant, category in sorted(keys, key=lambda k: (k[0], k[1] == "overall", k[1])):
        mine = ours.get((variant, category), {})
        cell = paper.deltas.get(variant, {}).get(category)
        unconverged = tuple(label for name, label in ((variant, variant), (paper.baseline,
                            f"baseline {paper.baseline}")) if (converged or {}).get(name) is False)
        table.append({"variant": variant, "category": category, "paper": cell, "ours": mine,
                      "verdicts": {u: verdict(mine.get(u), cell, unconverged)
                                   for u in rows_by_unit}})
    return table


def _ours_cell(row: dict | None) -> str:
    if row is None or row["mean_delta"] is None:
        return "-"
    p = f"p={row['p']:.3g}" + ("*" if row["significant"] else "") if row["p"] is not None \
        else f"p>={min_attainable_p(row['n_nonzero']):.3g}" if row["n_nonzero"] else "p=-"
    return f"{row['mean_delta']:+.4f} (n={row['n']}, {p})"


def format_directions(table: list[dict], units: list[str]) -> str:
    """Markdown: the paper's delta beside ours per pairing unit, with a verdict per unit.

    ``p>=X`` marks a test too small to reach p < 0.05 (X: the smallest p it could give).
    """
    head = ["variant", "category", "paper delta"]
    for unit in units:
        head += [f"ours, {unit} pairs", f"verdict ({unit}s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        paper = row["paper"]
        cells = [row["variant"], row["category"],
                 "-" if paper is None else f"{paper.delta:+.4f}" + ("*" if paper.significant else "")]
        for unit in units:
            cells += [_ours_cell(row["ours"].get(unit)), row["verdicts"][unit]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_counts(table: list[dict], unit: str) -> dict[str, int]:
    """How many of the paper's listed cells each verdict got (for a summary line)."""
    counts: dict[str, int] = {}
    for row in table:
        if row["paper"] is not None:
            v = row["verdicts"].get(unit, "no result")
            counts[v] = counts.get(v, 0) + 1
    return counts


def has_shard_scores(quality: dict) -> bool:
    """Whether every row of every model carries per-shard scores."""
    return all("shard_scores" in row for entry in quality.values() for row in entry["rows"])


def study_markdown(quality: dict, paper: PaperDirections, source: str = "",
                   exclude_tasks: tuple[str, ...] = (),
                   convergence: dict[str, Convergence] | None = None) -> str:
    """The study's record: per-task scores, paired tests by task (and by shard when the results
    have shard scores), each variant's convergence, and the agreement table against the paper.

    Args:
        quality: merged quality summaries (``load_quality``).
        paper: the loaded directions file; its baseline is the comparison's baseline.
        source: where ``quality`` came from (quoted in the text).
        exclude_tasks: also test every variant without these (in-domain) tasks.
        convergence: per variant; default: read from each entry's training runs
            (``quality_convergence``).
    """
    from toolchain.bench.quality import format_task_scores

    units = ["task"] + (["shard"] if has_shard_scores(quality) else [])
    rows = {u: compare_models(quality, paper.baseline, unit=u, exclude_tasks=exclude_tasks)
            for u in units}
    convergence = quality_convergence(quality) if convergence is None else convergence
    table = directions_table(rows, paper, {v: c.converged for v, c in convergence.items()})
    out = [f"Results: {source or 'quality summaries'}. Paper: {paper.source} "
           f"({paper.path.as_posix() if paper.path else 'given'}).", "",
           "## Scores per task (mteb main score)", "", format_task_scores(quality), ""]
    for unit in units:
        out += [f"## Paired Wilcoxon signed-rank vs {paper.baseline}, one pair per {unit}", "",
                format_comparison(rows[unit]), ""]
    out += ["## Convergence of the training runs", "", convergence_markdown(convergence), "",
            "## Against the paper's directions", "",
            "Paper delta: mean main-score difference vs the baseline, * = significant in the "
            "paper. Ours: mean delta (n pairs, two-sided p; * = p < 0.05; p>=X: too few "
            "non-zero pairs for the test to reach 0.05, X its smallest possible p). A variant "
            "or baseline whose training did not converge (table above) gets the verdict "
            "\"not converged\": its delta measures how far training got, not the design.", "",
            format_directions(table, units), ""]
    for unit in units:
        counts = agreement_counts(table, unit)
        listed = sum(counts.values())
        summary = ", ".join(f"{v}: {n}" for v, n in sorted(counts.items()))
        out.append(f"- {unit} pairs, the paper's {listed} listed findings: {summary}")
    return "\n".join(out) + "\n"

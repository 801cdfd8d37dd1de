"""Embedding quality: the task suite (``toolchain.data.tasks``, run by mteb) through Embedder.

Each model's mteb result files go to ``<out>/quality/<label>/`` (mteb's own format; the label is
``<preset>/<run>/<profile>`` unless given); ``<out>/quality.json`` summarises {label: {variant,
profile, preset, run, role, artifact, rows}} with rows {task, category, main_score, score, n}:
the input of ``poolattn compare``. Every label is checked for collisions before anything runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from toolchain.atomic import read_json, write_text_atomic
from toolchain.bench.artifacts import Artifact, check_labels, open_artifact, result_dir
from toolchain.errors import ToolchainError


def _tasks_module():
    try:
        from toolchain.data import tasks
    except ImportError as err:
        raise ToolchainError(f"the task suite (toolchain.data.tasks) is missing: {err}") from None
    return tasks


def _previous(path: Path, tasks: list[str] | None, limit: int | None, shards: int) -> dict:
    """The models of an existing summary to merge into; its settings must be these."""
    if not path.is_file():
        return {}
    data = read_json(path, "quality results")
    mine = {"tasks": tasks, "limit": limit, "shards": shards}
    theirs = {k: data.get(k) for k in mine}
    if theirs != mine:
        raise ToolchainError(f"{path}: evaluated with {theirs}, not {mine}: scores would not be "
                             f"comparable; use another --out or the same settings")
    return dict(data.get("models", {}))


def evaluate_artifacts(artifacts: Sequence[Artifact], out_dir: str | Path,
                       tasks: Sequence[str] | None = None, limit: int | None = None,
                       provider: str = "cpu", threads: int | None = None,
                       shards: int = 1, merge: bool = False) -> dict:
    """Evaluate each artifact on the suite and write ``out_dir/quality.json``.

    Args:
        tasks: task names (default: the whole offline suite).
        limit: at most this many examples per task (quick runs).
        shards: score each task's evaluation examples in this many disjoint shards too
            (rows get "shard_scores", for ``poolattn compare --unit shard``); default 1.
        merge: keep the models already in ``out_dir/quality.json`` (same tasks, limit and
            shards required); an artifact evaluated again under its label replaces its entry.

    Returns:
        The summary written: {"tasks", "limit", "shards", "models": {label: {..., "rows"}}}.

    Raises:
        ToolchainError: two artifacts with one label (or a label held by another artifact in
            the merged file), before anything is evaluated.
    """
    suite = _tasks_module()
    out_dir = Path(out_dir)
    names = list(tasks) if tasks else None
    models = _previous(out_dir / "quality.json", names, limit, shards) if merge else {}
    check_labels(artifacts, {m: e.get("artifact", "?") for m, e in models.items()})
    for artifact in artifacts:
        embedder = open_artifact(artifact, provider, threads)
        start = time.perf_counter()
        rows = suite.evaluate(embedder, task_names=names,
                              output_dir=out_dir / "quality" / result_dir(artifact.label),
                              limit=limit, shards=shards)
        models[artifact.label] = {"variant": artifact.variant, "profile": artifact.profile,
                                  "preset": artifact.preset, "run": artifact.run,
                                  "role": artifact.role, "artifact": str(artifact.path),
                                  "runtime": artifact.runtime,
                                  "max_length": embedder.tokenizer.max_length,
                                  "limit": limit, "shards": shards,
                                  "seconds": time.perf_counter() - start,
                                  "rows": [dict(r) for r in rows]}
        del embedder
    summary = {"tasks": names, "limit": limit, "shards": shards, "models": models}
    write_text_atomic(out_dir / "quality.json", json.dumps(summary, indent=2) + "\n")
    return summary


def role_of(entry: dict) -> str:
    """"variant" for a trained run (also results written before roles existed), else the
    baseline's kind ("untrained", "peer")."""
    return str(entry.get("role", "variant"))


def trained_only(models: dict) -> dict:
    """The entries of trained runs (what budgets and rollout advice apply to)."""
    return {m: e for m, e in models.items() if role_of(e) == "variant"}


def category_means(rows: Sequence[dict]) -> dict[str, float]:
    """Mean main score per task category."""
    grouped: dict[str, list[float]] = {}
    for row in rows:
        grouped.setdefault(row["category"], []).append(float(row["score"]))
    return {c: sum(v) / len(v) for c, v in sorted(grouped.items())}


def format_quality(models: dict) -> str:
    """Markdown table: one row per model, one column per category (mean main score).

    Args:
        models: ``{label: {"rows": [...]}}`` (the "models" mapping of quality.json).
    """
    means = {m: category_means(e["rows"]) for m, e in models.items()}
    categories = sorted({c for per in means.values() for c in per})
    lines = ["| model | " + " | ".join(categories) + " |",
             "|---|" + "---|" * len(categories)]
    for model, per in means.items():
        cells = [f"{per[c]:.4f}" if c in per else "-" for c in categories]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_task_scores(models: dict) -> str:
    """Markdown table: one row per task (with its category), one column per model."""
    labels = list(models)
    scores = {m: {r["task"]: r for r in e["rows"]} for m, e in models.items()}
    tasks: dict[str, str] = {}
    for entry in models.values():
        for row in entry["rows"]:
            tasks.setdefault(row["task"], row["category"])
    lines = ["| task | category | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for task, category in tasks.items():
        cells = [f"{scores[m][task]['score']:.4f}" if task in scores[m] else "-" for m in labels]
        lines.append(f"| {task} | {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overall_means(models: dict, exclude: Sequence[str] = ()) -> list[dict]:
    """Per model: mean score over all its tasks, and over all but ``exclude`` (in-domain)."""
    out = []
    for model, entry in models.items():
        scores = {r["task"]: float(r["score"]) for r in entry["rows"]}
        kept = [s for t, s in scores.items() if t not in set(exclude)]
        out.append({"model": model, "role": role_of(entry), "tasks": len(scores),
                    "overall": sum(scores.values()) / len(scores) if scores else None,
                    "tasks_kept": len(kept),
                    "overall_excluding": sum(kept) / len(kept) if kept else None})
    return out


def format_overall(rows: list[dict], exclude: Sequence[str] = ()) -> str:
    """Markdown: model, role, overall mean, mean excluding the in-domain task(s)."""
    excluded = ", ".join(exclude) or "none"
    lines = [f"| model | role | tasks | overall | overall excl. {excluded} |",
             "|---|---|---|---|---|"]
    for r in rows:
        cells = ["-" if r[k] is None else f"{r[k]:.4f}" for k in ("overall", "overall_excluding")]
        lines.append(f"| {r['model']} | {r['role']} | {r['tasks']} | {cells[0]} | "
                     f"{cells[1]} ({r['tasks_kept']} tasks) |")
    return "\n".join(lines)

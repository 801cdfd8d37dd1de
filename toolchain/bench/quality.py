"""Embedding quality: the task suite (``toolchain.data.tasks``, run by mteb) through Embedder.

Each model's mteb result files go to ``<out>/quality/<variant>/<profile>/`` (mteb's own format);
``<out>/quality.json`` summarises {model: {variant, profile, artifact, rows}} with rows
{task, category, main_score, score, n}: the input of ``poolattn compare``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from toolchain.atomic import write_text_atomic
from toolchain.bench.artifacts import Artifact, open_artifact
from toolchain.errors import ToolchainError


def _tasks_module():
    try:
        from toolchain.data import tasks
    except ImportError as err:
        raise ToolchainError(f"the task suite (toolchain.data.tasks) is missing: {err}") from None
    return tasks


def evaluate_artifacts(artifacts: Sequence[Artifact], out_dir: str | Path,
                       tasks: Sequence[str] | None = None, limit: int | None = None,
                       provider: str = "cpu", threads: int | None = None,
                       shards: int = 1) -> dict:
    """Evaluate each artifact on the suite and write ``out_dir/quality.json``.

    Args:
        tasks: task names (default: the whole offline suite).
        limit: at most this many examples per task (quick runs).
        shards: score each task's evaluation examples in this many disjoint shards too
            (rows get "shard_scores", for ``poolattn compare --unit shard``); default 1.

    Returns:
        The summary written: {"tasks", "limit", "shards", "models": {label: {..., "rows"}}}.
    """
    suite = _tasks_module()
    out_dir = Path(out_dir)
    models: dict[str, dict] = {}
    for artifact in artifacts:
        if artifact.label in models:
            raise ToolchainError(f"{artifact.path}: {artifact.label} given twice")
        embedder = open_artifact(artifact, provider, threads)
        start = time.perf_counter()
        rows = suite.evaluate(embedder, task_names=list(tasks) if tasks else None,
                              output_dir=out_dir / "quality" / artifact.variant / artifact.profile,
                              limit=limit, shards=shards)
        models[artifact.label] = {"variant": artifact.variant, "profile": artifact.profile,
                                  "artifact": str(artifact.path), "runtime": artifact.runtime,
                                  "seconds": time.perf_counter() - start,
                                  "rows": [dict(r) for r in rows]}
    summary = {"tasks": list(tasks) if tasks else None, "limit": limit, "shards": shards,
               "models": models}
    write_text_atomic(out_dir / "quality.json", json.dumps(summary, indent=2) + "\n")
    return summary


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

"""The run directory runs/<preset>/<variant>/ and what resuming from it means.

    checkpoints/step-<N>/   see checkpoint.py
    final/                  save_trained output of the last step (merge reads it)
    metrics.jsonl           one line per step: step, loss, lr, tokens_per_s, elapsed_s, ...
    ds_config.json          the DeepSpeed config the engine received
    train_config.json       the resolved TrainConfig (plus preset, variant, world size)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from toolchain.atomic import read_json, write_text_atomic
from toolchain.errors import ToolchainError
from toolchain.train.checkpoint import latest_checkpoint, read_state

# Keys that may change between a run and its resumption without changing its trajectory
# (length grouping changes only how a step's texts are padded).
RESUMABLE_CHANGES = {"save_every", "group_rows"}
RUN_FILES = ("checkpoints", "final", "metrics.jsonl", "ds_config.json", "train_config.json")


@dataclass
class ResumePlan:
    """What setup() does with an existing run directory."""

    checkpoint: Path | None = None  # resume from here
    complete: bool = False  # final/ already holds this run's last step
    fresh: bool = True  # start at step 0 (and clear old run files)


def plan_resume(run_dir: Path, record: dict, resume: bool) -> ResumePlan:
    """Decide between a fresh start, a resume and "already complete", writing nothing.

    Args:
        run_dir: runs/<preset>/<variant>.
        record: what train_config.json would hold for this run.
        resume: False always starts fresh.

    Raises:
        ToolchainError: resuming a run that was trained with different settings.
    """
    saved_path = run_dir / "train_config.json"
    if not resume or not saved_path.is_file():
        return ResumePlan()
    saved = read_json(saved_path, "saved train config")
    changed = sorted(k for k in set(saved) | set(record)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != record.get(k))
    if changed:
        raise ToolchainError(f"{run_dir}: existing run used different settings ({', '.join(changed)}); "
                             f"pass --no-resume to start over or choose another --run-dir")
    final = run_dir / "final"
    if (final / "state.json").is_file() and read_state(final).get("step") == record["steps"]:
        return ResumePlan(complete=True, fresh=False)
    checkpoint = latest_checkpoint(run_dir)
    return ResumePlan(checkpoint=checkpoint, fresh=checkpoint is None)


def clear_run(run_dir: Path) -> None:
    """Remove a previous run's files (a fresh start must not mix with them)."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (the killed run's tail)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the kill
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def read_metrics(path: Path) -> list[dict]:
    """All lines of a metrics.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

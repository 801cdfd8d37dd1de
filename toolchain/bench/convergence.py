"""Did training move a variant? Checked from its runs' metrics.jsonl, not assumed.

The test (issue 29's acceptance): a run converged when the mean InfoNCE loss over the last third
of its steps is at most ``CONVERGED_BELOW`` x ln(candidates), chance being ln(candidates) (every
candidate equally likely). A variant converged when every training run behind it did (a soup's
ingredients runs/<preset>/<variant>/seeds/d<k>/, else the variant dir itself). A variant whose
runs cannot be found (results copied elsewhere) is "unknown", never "converged".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.train.rundir import read_metrics

CONVERGED_BELOW = 0.75  # x ln(candidates): the last-third loss a converged run reaches


@dataclass(frozen=True)
class RunConvergence:
    """One training run's last-third loss against chance."""

    run: str
    steps: int
    candidates: int
    last_third_loss: float
    threshold: float

    @property
    def chance(self) -> float:
        return math.log(self.candidates)

    @property
    def ratio(self) -> float:
        """Last-third loss as a fraction of chance."""
        return self.last_third_loss / self.chance

    @property
    def converged(self) -> bool:
        return self.ratio <= self.threshold


def training_runs(variant_dir: Path) -> list[Path]:
    """The training runs behind a variant: its soup's ingredients (seeds/d<k>), else itself
    (empty when it has no metrics.jsonl)."""
    variant_dir = Path(variant_dir)
    seeds = sorted(p for p in (variant_dir / "seeds").glob("d*")
                   if (p / "metrics.jsonl").is_file())
    return seeds or ([variant_dir] if (variant_dir / "metrics.jsonl").is_file() else [])


def run_convergence(run: Path, threshold: float = CONVERGED_BELOW) -> RunConvergence:
    """The convergence test of one run directory.

    Raises:
        ToolchainError: no metrics.jsonl, no training steps in it, or a step without a
            candidate count (the test needs chance = ln(candidates)).
    """
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise ToolchainError(f"{path}: missing (no training metrics to check convergence)")
    steps = [m for m in read_metrics(path) if "loss" in m]
    if not steps:
        raise ToolchainError(f"{path}: no training steps recorded")
    candidates = steps[-1].get("candidates")
    if not isinstance(candidates, int) or candidates < 2:
        raise ToolchainError(f"{path}: line {len(steps)}: field candidates must be an integer "
                             f">= 2, got {candidates!r}")
    tail = steps[-max(1, len(steps) // 3):]
    loss = sum(float(m["loss"]) for m in tail) / len(tail)
    return RunConvergence(Path(run).name, len(steps), candidates, loss, threshold)


@dataclass(frozen=True)
class Convergence:
    """A variant's runs and the verdict: True, False, or None (no runs found)."""

    variant: str
    runs: tuple[RunConvergence, ...]

    @property
    def converged(self) -> bool | None:
        return all(r.converged for r in self.runs) if self.runs else None


def variant_convergence(variant: str, variant_dir: Path,
                        threshold: float = CONVERGED_BELOW) -> Convergence:
    return Convergence(variant, tuple(run_convergence(r, threshold)
                                      for r in training_runs(variant_dir)))


def quality_convergence(quality: dict, threshold: float = CONVERGED_BELOW,
                        root: Path | None = None) -> dict[str, Convergence]:
    """{variant name: Convergence} for every trained entry of merged quality summaries, found
    from its artifact (runs/<preset>/<variant>/<profile>: the variant dir is its parent;
    relative paths from ``root``, default the working directory)."""
    out: dict[str, Convergence] = {}
    for entry in quality.values():
        if entry.get("role", "variant") != "variant":
            continue
        if not entry.get("artifact"):  # no training run to read: unknown, never assumed
            if entry.get("variant"):
                out[str(entry["variant"])] = Convergence(str(entry["variant"]), ())
            continue
        artifact = Path(entry["artifact"])
        artifact = artifact if artifact.is_absolute() else (root or Path.cwd()) / artifact
        name = str(entry.get("variant") or artifact.parent.name)
        out[name] = variant_convergence(name, artifact.parent, threshold)
    return out


def convergence_markdown(convergence: dict[str, Convergence],
                         threshold: float = CONVERGED_BELOW) -> str:
    """One row per training run: last-third loss, chance, the threshold, and the verdict."""
    lines = [f"Converged: mean loss over the last third of a run's steps <= "
             f"{threshold} x ln(candidates) in every run of the variant.", "",
             "| variant | run | steps | candidates | last-third loss | chance ln(c) | "
             "loss / chance | run converged | variant |", "|---|---|---|---|---|---|---|---|---|"]
    for name, conv in sorted(convergence.items()):
        verdict = {True: "converged", False: "NOT converged", None: "unknown"}[conv.converged]
        if not conv.runs:
            lines.append(f"| {name} | - | - | - | - | - | - | - | {verdict} (no metrics.jsonl "
                         "found) |")
        for r in conv.runs:
            lines.append(f"| {name} | {r.run} | {r.steps} | {r.candidates} | "
                         f"{r.last_third_loss:.3f} | {r.chance:.3f} | {r.ratio:.3f} | "
                         f"{'yes' if r.converged else 'no'} | {verdict} |")
    return "\n".join(lines)

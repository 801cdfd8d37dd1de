"""Convergence is checked, not assumed: the last-third loss of every training run against
0.75 x ln(candidates), and the paper-direction verdicts of a variant that did not converge."""

import json
import math
import shutil

import pytest

from toolchain.bench.convergence import (CONVERGED_BELOW, quality_convergence, run_convergence,
                                         training_runs, variant_convergence)
from toolchain.bench.directions import load_directions, study_markdown
from toolchain.errors import ToolchainError
from toolchain.paths import project_root

from test_directions import PAPER_FILE, entry

RECORDED = project_root() / "benchmarks" / "results" / "study_smollm2-135m"


def write_metrics(run, losses, candidates=32):
    """metrics.jsonl as toolchain/train/recipe.py writes it: one JSON line per step."""
    run.mkdir(parents=True, exist_ok=True)
    rows = [{"step": i + 1, "loss": loss, "lr": 1e-3, "step_s": 4.0, "tokens_per_s": 400.0,
             "padding_fraction": 0.1, "peak_rss_mb": 5800.0, "elapsed_s": 4.0 * (i + 1),
             "candidates": candidates, "source": "bible", "precision": "fp32",
             "grad_norm": 1.0} for i, loss in enumerate(losses)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_last_third_against_chance(tmp_path):
    chance = math.log(32)
    falling = [chance - 0.1 * i for i in range(12)]  # last third: steps 9-12
    write_metrics(tmp_path / "falling", falling)
    result = run_convergence(tmp_path / "falling")
    assert result.last_third_loss == pytest.approx(sum(falling[-4:]) / 4)
    assert result.converged and result.chance == pytest.approx(chance)
    write_metrics(tmp_path / "flat", [chance - 0.01] * 12)
    assert not run_convergence(tmp_path / "flat").converged
    # exactly at the limit converges; a hair above does not
    write_metrics(tmp_path / "edge", [3.0] * 8 + [CONVERGED_BELOW * chance] * 4)
    assert run_convergence(tmp_path / "edge").converged
    write_metrics(tmp_path / "above", [3.0] * 8 + [CONVERGED_BELOW * chance + 1e-3] * 4)
    assert not run_convergence(tmp_path / "above").converged


def test_the_recorded_study_flags_m2_and_m3(tmp_path):
    """The last study's own metrics (benchmarks/results/study_smollm2-135m/): m3's and m2's
    runs stayed near chance; m5's all reached the limit."""
    for variant in ("m2", "m3", "m5"):
        for seed in range(3):
            run = tmp_path / variant / "seeds" / f"d{seed}"
            run.mkdir(parents=True)
            shutil.copy(RECORDED / f"metrics_{variant}_d{seed}.jsonl", run / "metrics.jsonl")
    verdicts = {v: variant_convergence(v, tmp_path / v) for v in ("m2", "m3", "m5")}
    assert verdicts["m5"].converged is True
    assert verdicts["m2"].converged is False and verdicts["m3"].converged is False
    assert all(r.ratio > 0.8 for r in verdicts["m3"].runs)  # 2.90-3.33 against ln 32 = 3.47
    assert [r.run for r in verdicts["m2"].runs] == ["d0", "d1", "d2"]


def test_bad_metrics_name_the_file(tmp_path):
    with pytest.raises(ToolchainError, match="metrics.jsonl: missing"):
        run_convergence(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")
    with pytest.raises(ToolchainError, match=r"metrics.jsonl: line 1: field candidates"):
        run_convergence(tmp_path)
    assert training_runs(tmp_path / "nothing") == []


def study_quality(tmp_path):
    quality = {f"{v}/onnx-fp32": entry(v, shift) for v, shift in
               (("m1", {}), ("m5", {"sts": 0.02, "classification": -0.01}),
                ("m4", {"sts": -0.03}))}
    for label, e in quality.items():
        e["artifact"] = str(tmp_path / e["variant"] / "onnx-fp32")
    return quality


def test_unconverged_variant_and_baseline_verdicts(tmp_path):
    quality = study_quality(tmp_path)
    paper = load_directions(PAPER_FILE)
    write_metrics(tmp_path / "m1", [3.4 - 0.2 * i for i in range(9)])  # converged
    write_metrics(tmp_path / "m5" / "seeds" / "d0", [3.4 - 0.2 * i for i in range(9)])
    write_metrics(tmp_path / "m4" / "seeds" / "d0", [3.4 - 0.2 * i for i in range(9)])
    write_metrics(tmp_path / "m4" / "seeds" / "d1", [3.46] * 9)  # one seed stayed at chance
    conv = quality_convergence(quality)
    assert {v: c.converged for v, c in conv.items()} == {"m1": True, "m4": False, "m5": True}
    text = study_markdown(quality, paper, "test")
    assert "| m4 | sts | +0.0095* |" in text
    directions = text.split("## Against the paper")[1]
    m4_rows = [line for line in directions.splitlines() if line.startswith("| m4 | ")]
    assert m4_rows and all("not converged (m4)" in line or line.endswith("no result |")
                           for line in m4_rows)  # the paper's clustering cell: no data here
    assert "opposite direction" not in " ".join(m4_rows)  # m4's sts delta is opposite the paper's
    m5_sts = next(line for line in directions.splitlines() if line.startswith("| m5 | sts |"))
    assert "not converged" not in m5_sts and "same direction" in m5_sts
    assert "| m4 | d1 | 9 | 32 | 3.460 |" in text and "NOT converged" in text
    # a baseline that did not converge makes every verdict against it "not converged"
    write_metrics(tmp_path / "m1", [3.46] * 9)
    directions = study_markdown(quality, paper, "test").split("## Against the paper")[1]
    m5_sts = next(line for line in directions.splitlines() if line.startswith("| m5 | sts |"))
    assert "not converged (baseline m1)" in m5_sts


def test_results_without_training_runs_are_unknown_not_flagged(tmp_path):
    quality = study_quality(tmp_path)  # no metrics.jsonl anywhere
    conv = quality_convergence(quality)
    assert all(c.converged is None for c in conv.values())
    text = study_markdown(quality, load_directions(PAPER_FILE), "test")
    assert "not converged (" not in text.split("## Against the paper")[1]
    assert "unknown (no metrics.jsonl found)" in text

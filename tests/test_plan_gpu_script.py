"""benchmarks/gpu/run_gpu_validation.py: a thin driver of the `poolattn` commands. Without CUDA
it refuses clearly unless asked for the CPU rehearsal (--dry-run), which runs the same sequence:
train (SIGKILL mid-run, resume), merge, export, verify, with each rank's peak RSS next to
`poolattn plan --device cpu`."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from conftest import launcher_variables_restored
from toolchain.paths import project_root

SCRIPT = project_root() / "benchmarks" / "gpu" / "run_gpu_validation.py"


@pytest.fixture(scope="module", autouse=True)
def launcher_env():
    """The rehearsal's plan imports DeepSpeed in this process: put back what it sets."""
    with launcher_variables_restored():
        yield


@pytest.fixture(scope="module")
def gpu_script():
    spec = importlib.util.spec_from_file_location("run_gpu_validation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_refuses_clearly_without_cuda(gpu_script, tmp_path, capsys):
    assert gpu_script.main(["--out", str(tmp_path), "--runs", str(tmp_path / "runs")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_driver_holds_no_second_model_engine_session_or_timer():
    """Every model, DeepSpeed, export and timing path is the toolchain's, reached through
    `poolattn` commands: none of them is rebuilt here."""
    source = SCRIPT.read_text()
    for duplicate in ("deepspeed.initialize", "InferenceSession", "MistralConfig",
                      "torch.onnx.export", "perf_counter() - start\n    return statistics",
                      "build_pooler", "fill_auto"):
        assert duplicate not in source
    commands = set(re.findall(r'"(train|merge|export|plan|init|bench)"', source))
    assert commands == {"train", "merge", "export", "plan", "init", "bench"}


def test_cpu_rehearsal_kills_resumes_and_records(gpu_script, tmp_path):
    """The rehearsal's quick form on the tiny preset, one rank: the run is SIGKILLed after step
    3, resumes from its step-2 checkpoint and finishes; the export passes verify; every stage
    has a time and a peak RSS; the record holds the plan next to the measured peak."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert gpu_script.main(["--preset", "tiny-mistral", "--dry-run", "--quick", "--nproc", "1",
                            "--steps", "4", "--kill-after", "3", "--runs", str(runs),
                            "--out", str(out)]) == 0
    record = json.loads((out / "rehearsal_tiny_mistral.json").read_text())
    stages = {s["stage"]: s for s in record["stages"]}
    assert stages["train m5"]["killed"] and not stages["train m5 (resumed)"]["killed"]
    assert len(record["m5_losses"]) == 4
    steps = [json.loads(line)["step"] for line in (runs / "m5" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4]  # the killed run's step 3 was dropped and trained again
    assert (runs / "m5" / "final").is_dir()
    artifact = record["artifacts"]["m5/onnx-fp32"]
    assert artifact["verify_passed"] and artifact["attention"] == "bidirectional"
    for stage in record["stages"]:
        assert stage["seconds"] > 0 and all(v > 50 for v in stage["peak_rss_mib"].values())
    assert set(stages["train m5 (resumed)"]["peak_rss_mib"]) == {"0"}
    rows = gpu_script.plan_vs_measured(record)
    assert rows and all(r["plan_bytes"] > 0 and r["measured_bytes"] > 0 for r in rows)
    cpu_rank = record["plan"]["m5"]["cpu_rank"]
    assert cpu_rank["peak"] == cpu_rank["runtime"] + max(
        cpu_rank["build"] - cpu_rank["runtime"], cpu_rank["train"] - cpu_rank["runtime"])
    markdown = (out / "rehearsal_tiny_mistral.md").read_text()
    assert markdown.startswith("# 7B path rehearsal") and "(SIGKILL)" in markdown


@pytest.mark.slow
def test_rehearsal_at_real_width(gpu_script, tmp_path):
    """A shortened rehearsal at Mistral-7B width (2 layers, 2 ranks, ZeRO-3 + offload): train
    with a SIGKILL and a resume, merge, export above 2 GB, verify; the plan within 10 % of each
    rank's measured peak."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert gpu_script.main(["--preset", "mistral-7b-width", "--dry-run", "--quick",
                            "--steps", "3", "--kill-after", "2", "--runs", str(runs),
                            "--out", str(out)]) == 0
    record = json.loads((out / "rehearsal_mistral_7b_width.json").read_text())
    assert record["artifacts"]["m5/onnx-fp32"]["verify_passed"]
    assert record["artifacts"]["m5/onnx-fp32"]["external_data"]
    rows = gpu_script.plan_vs_measured(record)
    assert {r["rank"] for r in rows} == {"0", "1"}
    assert all(abs(r["error"]) <= 0.10 for r in rows), rows

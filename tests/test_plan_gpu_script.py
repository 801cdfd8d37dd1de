"""benchmarks/gpu/run_gpu_validation.py on a machine without CUDA: clear refusal, and the
--dry-run (tiny 2-layer model on CPU) that exercises its code path."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import launcher_variables_restored
from toolchain.paths import project_root

SCRIPT = project_root() / "benchmarks" / "gpu" / "run_gpu_validation.py"


@pytest.fixture(scope="module", autouse=True)
def launcher_env():
    """The dry run starts a one-process DeepSpeed group: put back the variables it sets."""
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
    assert gpu_script.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_config_is_the_shipped_zero3_file_filled(gpu_script):
    config, source = gpu_script.ds_config(world=8, micro_batch=12, hidden=4096, on_gpu=True)
    assert source.endswith("ds_configs/zero3.json")
    assert config["zero_optimization"]["stage"] == 3 and config["bf16"]["enabled"] is True
    assert config["train_batch_size"] == 96
    assert "auto" not in json.dumps(config)
    assert gpu_script.parse_args(["--local_rank=3"]).local_rank == 3  # the deepspeed launcher


def test_layers_follow_the_plan(gpu_script):
    args = gpu_script.parse_args([])
    shape = gpu_script.MODEL_SHAPES["mistral-7b"]
    assert gpu_script.choose_layers(args, shape, 1, 80 * 10**9) == (32, "all layers")
    layers, reason = gpu_script.choose_layers(args, shape, 1, 48 * 10**9)  # e.g. L40S
    assert layers < 32 and reason.startswith("reduced")


def test_dry_run_training_step(gpu_script, tmp_path):
    assert gpu_script.main(["--dry-run", "--skip-export", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_cpu-dry-run.json").read_text())
    train = result["train"]
    assert train["layers"] == 2 and train["loss_finite"] and len(train["losses"]) == 2
    assert train["zero_stage"] == 3 and train["trainable_params"] > 0
    assert train["engine"].startswith("DeepSpeed ZeRO-3 on CPU")  # the real engine stepped
    assert train["losses"][0] != train["losses"][1]
    assert (tmp_path / "gpu_cpu-dry-run.md").read_text().startswith("# GPU validation")


@pytest.mark.slow
def test_dry_run_with_export(gpu_script, tmp_path):
    assert gpu_script.main(["--dry-run", "--out", str(tmp_path)]) == 0
    export = json.loads((tmp_path / "gpu_cpu-dry-run.json").read_text())["export"]
    assert export["ort_provider"] == "CPUExecutionProvider"
    assert export["timings"] and export["timings"][0]["max_abs_diff"] < 1e-4

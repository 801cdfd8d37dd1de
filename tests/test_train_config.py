"""Training stage without an engine: config, DeepSpeed config resolution, data order, schedule,
the CLI's help and its refusal of bad input (before any engine starts, writing nothing)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.cpu import cpu_has_bf16
from toolchain.data.training import read_training_file
from toolchain.errors import ToolchainError
from toolchain.presets import load_preset, preset_dir
from toolchain.train.batches import BatchPlan
from toolchain.train.config import TrainConfig, config_for_preset
from toolchain.train.ds_config import DS_CONFIG_FILES, resolve_ds_config
from toolchain.train.recipe import linear_schedule

WORDS = ["apple", "river", "stone", "cloud", "music", "engine", "forest", "garden", "silver",
         "window", "candle", "bridge", "dragon", "pepper", "rocket", "planet", "mirror", "violin",
         "harbor", "tiger", "winter", "coffee", "marble", "castle", "jungle", "pencil"]


def make_learnable_jsonl(path: Path, rows: int = 64, seed: int = 0) -> Path:
    """Queries whose positive repeats their words: a random-weight model can learn it fast."""
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        a, b, c = rng.sample(WORDS, 3)
        d, e, f = rng.sample(WORDS, 3)
        lines.append(json.dumps({"query": f"{a} {b}", "positive": f"the {b} and the {a} with {c}",
                                 "negatives": [f"the {d} and the {e} with {f}"]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_preset(tmp_path: Path, base: str = "tiny-mistral", **train) -> Path:
    """A copy of a shipped preset with ``train`` merged into its train section."""
    data = yaml.safe_load((preset_dir() / f"{base}.yaml").read_text())
    data["train"] = {**data.get("train", {}), **train}
    path = tmp_path / f"{base}-test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["tiny-mistral", "tiny-qwen2", "tiny-llama", "smollm2-135m"])
def test_shipped_presets_have_valid_train_sections(name):
    config = config_for_preset(load_preset(name))
    assert config.temperature == 0.05 and config.lora.r == 16 and config.lora.alpha == 32


def test_overrides_and_validation():
    config = TrainConfig().with_overrides(steps=7, chunk_size=0, zero_stage=3, lr=None)
    assert (config.steps, config.chunk_size, config.zero_stage, config.lr) == (7, None, 3, 1e-3)
    for bad, match in [({"zero_stage": 4}, "unknown ZeRO stage"), ({"offload": True}, "zero_stage 3"),
                       ({"precision": "fp16"}, "precision"), ({"steps": 0}, "steps"),
                       ({"batch_size": "many"}, "batch_size"), ({"nonsense": 1}, "unknown key"),
                       ({"lora": {"r": 8, "rank": 3}}, "unknown key"), ({"data_limit": 1}, "data_limit")]:
        with pytest.raises(ToolchainError, match=match):
            TrainConfig.from_dict(bad)


@pytest.mark.parametrize("stage,offload", sorted(DS_CONFIG_FILES))
def test_ds_config_resolves_every_auto(stage, offload):
    config = TrainConfig(zero_stage=stage, offload=offload, batch_size=8, grad_clip=0.5, lr=3e-4)
    resolved = resolve_ds_config(config, world_size=2, micro_batch=4, micro_steps=3, hidden_size=64,
                                 on_gpu=False)
    assert "auto" not in json.dumps(resolved)
    assert resolved["train_batch_size"] == 4 * 3 * 2
    assert resolved["gradient_clipping"] == 0.5 and resolved["optimizer"]["params"]["lr"] == 3e-4
    # auto precision on CPU: bf16 only where the CPU has bf16 units (detected, never assumed)
    assert resolved["bf16"]["enabled"] is cpu_has_bf16()
    assert resolved["zero_optimization"]["stage"] == stage
    on_gpu = resolve_ds_config(config, world_size=1, micro_batch=1, micro_steps=1, hidden_size=64,
                               on_gpu=True)
    assert on_gpu["bf16"]["enabled"] is True and on_gpu["optimizer"]["params"]["torch_adam"] is False


def test_batches_are_a_function_of_the_step(tmp_path):
    rows, _ = read_training_file(make_learnable_jsonl(tmp_path / "d.jsonl", rows=20))
    plan = BatchPlan(rows, batch_size=8, negatives_per_query=2, seed=3)
    again = BatchPlan(rows, batch_size=8, negatives_per_query=2, seed=3)
    assert plan.batch(5) == again.batch(5) and plan.batch(5) != plan.batch(6)
    batch = plan.batch(0)
    assert len(batch.queries) == 8 and len(batch.negatives) == 16  # 1 own + 1 topped up each
    # every row is seen once per epoch (20 rows; steps 0-1 = 16 rows, no repeats)
    seen = plan.global_indices(0) + plan.global_indices(1)
    assert len(set(seen)) == 16
    halves = [BatchPlan(rows, 8, 1, 3, rank=r, world_size=2).batch(4).queries for r in (0, 1)]
    assert halves[0] + halves[1] == plan.batch(4).queries
    with pytest.raises(ToolchainError, match="divisible"):
        BatchPlan(rows, 7, 1, 0, world_size=2)


def test_linear_schedule_warms_up_and_decays_without_zero():
    factors = [linear_schedule(s, warmup=3, total=10) for s in range(10)]
    assert factors[:3] == [0.25, 0.5, 0.75] and factors[3] == 1.0
    assert all(a > b for a, b in zip(factors[3:], factors[4:])) and factors[-1] > 0


def test_train_help_lists_the_options():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--zero", "--offload", "--chunk-size", "--grad-accum", "--nproc", "--resume",
                   "--gradient-checkpointing", "--max-length", "--warmup", "--save-every"):
        assert option in result.output


@pytest.mark.parametrize("case", ["missing", "malformed", "variant", "zero", "max_length", "batch"])
def test_bad_input_fails_before_the_engine_and_writes_nothing(tmp_path, case):
    data = make_learnable_jsonl(tmp_path / "d.jsonl", rows=16)
    args = ["train", "--preset", "tiny-mistral", "--variant", "m1", "--data", str(data),
            "--run-dir", str(tmp_path / "run"), "--steps", "2"]
    expected = {"missing": "does not exist", "malformed": "malformed", "variant": "unknown variant",
                "zero": "unknown ZeRO stage", "max_length": "max_position_embeddings",
                "batch": "exceeds"}[case]
    if case == "missing":
        args[args.index(str(data))] = str(tmp_path / "absent.jsonl")
    elif case == "malformed":
        data.write_text(data.read_text() + '{"query": "q", "positive": 3}\n')
    elif case == "variant":
        args[args.index("m1")] = "m9"
    elif case == "zero":
        args += ["--zero", "5"]
    elif case == "max_length":
        args += ["--max-length", "100000"]
    else:
        args += ["--batch-size", "32", "--nproc", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "run").exists()

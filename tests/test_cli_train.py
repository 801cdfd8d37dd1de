"""`poolattn train` flags come from TrainConfig's field metadata: every setting is a documented
flag (in --help and docs/training.md), reaches the TrainConfig, survives the torchrun re-launch, and the
training package never imports the CLI (the per-rank entry point lives in toolchain.cli)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_train_config import make_learnable_jsonl
from toolchain.cli import main
from toolchain.paths import project_root
from toolchain.presets import load_preset
from toolchain.train.config import TrainConfig, config_for_preset
from toolchain.train.launch import RANK_ENTRY_MODULE, torchrun_command
from toolchain.train.settings import overrides_from_flags, settings_markdown, train_settings

# A valid value for every setting that has a flag, each unlike the tiny-mistral preset's.
SAMPLES = {"data_limit": 40, "zero_stage": 3, "offload": True, "steps": 7, "warmup_steps": 2,
           "lr": 2e-3, "head_lr": 5e-4, "weight_decay": 0.02, "batch_size": 8, "chunk_size": 4,
           "group_rows": 8, "grad_accum": 2, "max_length": 32, "temperature": 0.1,
           "negatives_per_query": 2, "grad_clip": 0.5, "gradient_checkpointing": True,
           "precision": "bf16", "seed": 5, "data_seed": 9, "save_every": 3, "lora.r": 8, "lora.alpha": 16,
           "lora.dropout": 0.05, "lora.target_modules": ["q_proj", "v_proj"]}


def _value(config: TrainConfig, key: str):
    parent, _, child = key.partition(".")
    return getattr(getattr(config, parent), child) if child else getattr(config, parent)


def _flag_args(samples: dict) -> list[str]:
    args = []
    for setting in train_settings():
        if setting.key not in samples:
            continue
        value = samples[setting.key]
        if setting.kind is bool:
            args.append(setting.flag if value else f"--no-{setting.flag[2:]}")
        else:
            args += [setting.flag, ",".join(value) if isinstance(value, list) else str(value)]
    return args


@pytest.fixture()
def captured(monkeypatch):
    """Configs that reach recipe_main, and the argument lists handed to the torchrun re-launch."""
    seen = {"configs": [], "relaunch": []}
    monkeypatch.setattr("toolchain.train.recipe_main",
                        lambda preset, config, **options: seen["configs"].append(config) or [])
    monkeypatch.setattr("toolchain.train.launch.relaunch",
                        lambda args, nproc: seen["relaunch"].append(args) or 0)
    return seen


def test_every_setting_is_an_option_of_train_help():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0, result.output
    names = {f.name for f in train_settings()}
    assert {s.key.partition(".")[0] for s in train_settings()} == {
        f.name for f in TrainConfig.__dataclass_fields__.values()}
    for setting in train_settings():
        shown = f"train.{setting.key}"
        assert shown in result.output
        if not setting.preset_only:
            assert setting.flag in result.output and f"[{shown}]" in result.output.replace("\n", " ")
    assert len(names) == len(train_settings())  # no two settings share a flag
    for legacy in ("--zero", "--warmup", "--negatives", "--data-limit", "--head-lr", "--group-rows",
                   "--offload", "--no-offload", "--temperature", "--lora-r"):
        assert legacy in result.output


def test_samples_cover_every_flag():
    assert set(SAMPLES) | {"data"} == {s.key for s in train_settings() if not s.preset_only}


def test_flags_override_the_preset(tmp_path, captured):
    preset = config_for_preset(load_preset("tiny-mistral"))
    data = make_learnable_jsonl(tmp_path / "d.jsonl", rows=64)
    args = ["train", "--variant", "m1", "--run-dir", str(tmp_path / "run"), "--data", str(data),
            *_flag_args(SAMPLES)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (config,) = captured["configs"]
    assert config.temperature == 0.1 and config.lora.r == 8
    assert config.data == str(data) and config.mixture is None
    for key, value in SAMPLES.items():
        assert _value(config, key) == value != _value(preset, key), key


def test_unset_flags_keep_the_preset_and_lora_merges_key_by_key(tmp_path, captured):
    result = CliRunner().invoke(main, ["train", "--variant", "m1", "--run-dir", str(tmp_path / "r"),
                                       "--lora-r", "4"])
    assert result.exit_code == 0, result.output
    (config,) = captured["configs"]
    preset = config_for_preset(load_preset("tiny-mistral"))
    assert config.lora.r == 4 and config.lora.alpha == preset.lora.alpha
    assert config.to_dict() | {"lora": None} == preset.to_dict() | {"lora": None}
    assert overrides_from_flags({"lora_r": 4, "steps": None}) == {"lora": {"r": 4}}


def test_relaunch_forwards_every_option(tmp_path, captured):
    data = make_learnable_jsonl(tmp_path / "d.jsonl", rows=64)
    args = ["--variant", "m1", "--run-dir", str(tmp_path / "run"), "--data", str(data),
            "--no-resume", *_flag_args(SAMPLES)]
    result = CliRunner().invoke(main, ["train", *args, "--nproc", "2"])
    assert result.exit_code == 0, result.output
    (child,) = captured["relaunch"]
    assert "--nproc" not in child and "--no-resume" in child
    result = CliRunner().invoke(main, ["train", *child])  # what each rank parses
    assert result.exit_code == 0, result.output
    (config,) = captured["configs"]
    direct = CliRunner().invoke(main, ["train", *args])
    assert direct.exit_code == 0, direct.output
    assert config == captured["configs"][1]


def test_readme_lists_every_setting():
    readme = (project_root() / "docs" / "training.md").read_text()
    assert settings_markdown() in readme, (
        "docs/training.md's settings table is stale: paste `python -m toolchain.train.settings`")
    for setting in train_settings():
        assert f"`{setting.key}`" in readme and (setting.preset_only or f"`{setting.flag}`" in readme)


def test_training_package_does_not_import_the_cli():
    code = ("import sys, toolchain.train.launch; "
            "assert not any(m.startswith('toolchain.cli') for m in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_torchrun_targets_the_rank_entry_point():
    assert importlib.util.find_spec(RANK_ENTRY_MODULE) is not None
    command = torchrun_command(["--preset", "tiny-mistral"], 2)
    assert command[command.index("-m", 2) + 1] == RANK_ENTRY_MODULE == "toolchain.cli.train_rank"


def test_rank_entry_point_prints_errors_as_one_line():
    result = subprocess.run([sys.executable, "-m", RANK_ENTRY_MODULE, "--preset", "nope"],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
    assert result.stderr.startswith("error: unknown preset 'nope'")

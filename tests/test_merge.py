"""`poolattn merge`: LoRA folded in, parity gated (as peft's _test_merge_layers: outputs match
before the merge, after merge_and_unload and after save/reload), nothing written on failure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import toolchain.merge as merge_module
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.merge import GATE_MIN_COSINE, merge_run
from toolchain.modeling import load_embedding_model
from toolchain.modeling.lora import load_trained

from conftest import TEXTS
from test_export_fixtures import make_trained_run, one_thread  # noqa: F401


@pytest.mark.parametrize("preset,variant", [("tiny-mistral", "m5"), ("tiny-qwen2", "m2"),
                                            ("tiny-llama", "m1")])
def test_merge_parity_before_after_reload(tmp_path, preset, variant):
    run = make_trained_run(tmp_path, preset, variant)
    adapter_model, _, _ = load_trained(run / "final")
    with torch.no_grad():
        adapter = adapter_model.encode(TEXTS)
        with adapter_model.backbone.disable_adapter():
            base = adapter_model.encode(TEXTS)
    # The fake training must matter, or parity below proves nothing.
    assert (adapter - base).abs().max() > 1e-3

    manifest = merge_run(run, log=lambda *_: None)
    gate = manifest["merge"]["gate"]
    assert gate["min_cosine_required"] == GATE_MIN_COSINE
    for key in ("merged_vs_adapter", "reloaded_vs_adapter"):
        assert gate[key]["min_cosine"] >= GATE_MIN_COSINE and gate[key]["max_abs"] < 1e-5
    assert manifest["variant"] == variant and manifest["merge"]["source_run"] == str(run.resolve())

    merged = load_embedding_model(run / "merged")
    assert not any("lora" in name for name, _ in merged.backbone.named_parameters())
    torch.testing.assert_close(merged.encode(TEXTS), adapter, rtol=0, atol=1e-5)
    config = json.loads((run / "merged/backbone/config.json").read_text())
    assert config["is_causal"] == (merged.variant.attention == "causal")


def test_lora_scale_interpolates_between_untrained_and_trained_backbone(tmp_path):
    run = make_trained_run(tmp_path, "tiny-qwen2", "m5")
    adapter_model, _, _ = load_trained(run / "final")
    with torch.no_grad(), adapter_model.backbone.disable_adapter():
        base = adapter_model.encode(TEXTS)
    runner = CliRunner()
    weights = {}
    for scale in ("0", "0.5", "1"):
        result = runner.invoke(main, ["merge", str(run), "--lora-scale", scale,
                                      "--out", str(tmp_path / f"merged-{scale}")])
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / f"merged-{scale}/manifest.json").read_text())
        assert manifest["merge"]["lora_scale"] == float(scale)
        model = load_embedding_model(tmp_path / f"merged-{scale}")
        weights[scale] = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        if scale == "0":  # nothing of the adapter left: the untrained backbone, trained head
            torch.testing.assert_close(model.encode(TEXTS), base, rtol=0, atol=1e-5)
    changed = [k for k in weights["1"] if not torch.equal(weights["1"][k], weights["0"][k])]
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    for k in changed:  # the half-scaled delta lies halfway between
        torch.testing.assert_close(weights["0.5"][k], (weights["0"][k] + weights["1"][k]) / 2,
                                   rtol=0, atol=1e-6)
    refused = runner.invoke(main, ["merge", str(run), "--lora-scale", "1.5"])
    assert refused.exit_code != 0 and "1.5" in refused.output


def test_merge_is_idempotent_and_cli_reports(tmp_path):
    run = make_trained_run(tmp_path, "tiny-llama", "m4")
    runner = CliRunner()
    first = runner.invoke(main, ["merge", str(run)])
    assert first.exit_code == 0, first.output
    assert "merged min cosine" in first.output
    hashes = json.loads((run / "merged/manifest.json").read_text())["files"]
    second = runner.invoke(main, ["merge", str(run), "--out", str(tmp_path / "again")])
    assert second.exit_code == 0, second.output
    assert json.loads((tmp_path / "again/manifest.json").read_text())["files"] == hashes


def test_broken_merge_fails_gate_and_writes_nothing(tmp_path, monkeypatch):
    """A merge that changes the function (one perturbed weight) must not produce merged/."""
    run = make_trained_run(tmp_path, "tiny-mistral", "m3")
    real_fold = merge_module.fold_lora

    def broken_fold(model):
        model = real_fold(model)
        with torch.no_grad():
            model.backbone.layers[0].mlp.down_proj.weight.mul_(1.5)
        return model

    monkeypatch.setattr(merge_module, "fold_lora", broken_fold)
    result = CliRunner().invoke(main, ["merge", str(run)])
    assert result.exit_code == 2
    assert "merge gate: merged vs adapter min cosine" in result.output
    assert not (run / "merged").exists()
    assert [p.name for p in run.iterdir()] == ["final"]


def test_merge_rejects_a_directory_without_checkpoint(tmp_path):
    result = CliRunner().invoke(main, ["merge", str(tmp_path)])
    assert result.exit_code == 2
    assert "no trained checkpoint" in result.output and "final/trained.json" in result.output
    with pytest.raises(ToolchainError, match="no trained checkpoint"):
        merge_run(tmp_path / "missing")


def test_gate_figures_are_real_cosines():
    from toolchain.parity import compare

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 8))
    figures = compare(a, a * 3.0)  # same directions: cosine 1, large absolute difference
    assert figures["min_cosine"] == pytest.approx(1.0) and figures["max_abs"] > 1
    flipped = a.copy()
    flipped[2] *= -1
    assert compare(flipped, a)["min_cosine"] == pytest.approx(-1.0)


def test_tampered_checkpoint_is_refused(tmp_path):
    """Training hashes final/ (manifest.json); merge refuses a changed file before loading."""
    from toolchain.atomic import write_manifest

    run = make_trained_run(tmp_path, "tiny-llama", "m2")
    write_manifest(run / "final", {"kind": "trained_checkpoint", "step": 1})
    weights = run / "final/adapter/adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(ToolchainError, match="adapter_model.safetensors: sha256 differs"):
        merge_run(run, log=lambda *_: None)
    assert not (run / "merged").exists()

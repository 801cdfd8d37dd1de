"""Shared builders for the merge/export/embedder tests (no tests here).

Artifacts are cached under the session's pytest temp dir, so test modules share one export per
(preset, variant, profiles) instead of re-exporting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from toolchain.modeling import build_embedding_model, save_embedding_model
from toolchain.modeling.lora import LoraSettings, apply_lora, save_trained
from toolchain.presets import load_preset


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread is as fast alone and far faster on a shared, busy CPU
    (two spinning threads per process stall each other). Import into a module to apply it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_trained_run(root: Path, preset: str = "tiny-mistral", variant: str = "m5",
                     seed: int = 0) -> Path:
    """A fake trained run root/<preset>/<variant>/final: non-zero LoRA B, perturbed head."""
    model = build_embedding_model(preset, variant)
    apply_lora(model, LoraSettings())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
        for param in model.head.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    run = Path(root) / preset / variant
    save_trained(model.eval(), run / "final", load_preset(preset), LoraSettings())
    return run


def make_model_dir(root: Path, preset: str, variant: str, seed: int = 0) -> Path:
    """A merged-model-like directory (random backbone, perturbed head) at root/merged."""
    model = build_embedding_model(preset, variant, head_seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.head.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    save_embedding_model(model, Path(root) / "merged")
    return Path(root) / "merged"


def cached_export(factory, preset: str, variant: str, profiles=("fp32",)) -> Path:
    """Run dir (merged/ + onnx-<profile>/) for (preset, variant), exported once per session;
    an export of the same model with more profiles serves a request for fewer."""
    from toolchain.export.pipeline import export_model_dir

    cache = factory.getbasetemp() / "export-cache"
    for existing in sorted(cache.glob(f"{preset}-{variant}-*")):  # a run with these profiles too
        if all((existing / f"onnx-{p}" / "manifest.json").is_file() for p in profiles):
            return existing
    run = cache / f"{preset}-{variant}-{'-'.join(profiles)}"
    if not (run / f"onnx-{profiles[-1]}" / "manifest.json").is_file():
        model_dir = make_model_dir(run, preset, variant)
        export_model_dir(model_dir, profiles, threads=1, log=lambda *_: None)
    return run

"""`poolattn merge`: a trained run (LoRA adapter + head) -> one merged model directory.

Reads RUN_DIR/final (or any checkpoint dir with trained.json: final/ or checkpoints/step-N/,
from ZeRO-2 or ZeRO-3 runs alike, since training gathers ZeRO-3 partitions before saving),
folds the LoRA weights into the base weights (peft merge_and_unload), keeps the head, and
writes RUN_DIR/merged with `save_embedding_model` (backbone safetensors with is_causal in
config.json, tokenizer, pooling/, manifest with sha256s).

Gate: on PROBE_TEXTS, the merged model and its saved-and-reloaded copy must both give
embeddings with cosine >= 0.99999 (fp32) to the unmerged adapter model's, else nothing is
written. The figures go into the manifest under merge.gate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolchain.atomic import MANIFEST, atomic_dir, read_manifest, sha256_file, write_manifest
from toolchain.errors import ToolchainError
from toolchain.modeling.lora import TRAINED_JSON, load_trained
from toolchain.modeling.model import EmbeddingModel, load_embedding_model, save_embedding_model
from toolchain.parity import compare
from toolchain.probe_texts import PROBE_TEXTS

GATE_MIN_COSINE = 0.99999


def find_checkpoint(run_dir: Path) -> tuple[Path, Path]:
    """(checkpoint dir, default output dir) for a run dir or a checkpoint dir.

    Raises:
        ToolchainError: neither RUN_DIR/trained.json nor RUN_DIR/final/trained.json exists.
    """
    run_dir = Path(run_dir)
    if (run_dir / TRAINED_JSON).is_file():
        run = run_dir.parent.parent if run_dir.parent.name == "checkpoints" else run_dir.parent
        return run_dir, run / "merged"
    if (run_dir / "final" / TRAINED_JSON).is_file():
        return run_dir / "final", run_dir / "merged"
    raise ToolchainError(f"{run_dir}: no trained checkpoint ({run_dir}/final/{TRAINED_JSON} is "
                         f"missing; run `poolattn train` first)")


def fold_lora(model: EmbeddingModel) -> EmbeddingModel:
    """Fold the adapter into the base weights in place (peft merge_and_unload)."""
    from peft import PeftModel

    if not isinstance(model.backbone, PeftModel):
        raise ToolchainError("model has no LoRA adapter to merge")
    model.backbone = model.backbone.merge_and_unload()
    return model


def scale_lora(model: EmbeddingModel, scale: float) -> None:
    """Multiply every LoRA layer's delta by ``scale`` (WiSE-FT's weight-space interpolation
    between the untrained and the trained backbone, Wortsman et al. 2022)."""
    from peft.tuners.lora import LoraLayer

    if not 0.0 <= scale <= 1.0:
        raise ToolchainError(f"lora scale {scale}: expected a value in [0, 1]")
    for layer in model.backbone.modules():
        if isinstance(layer, LoraLayer):
            layer.scale_layer(scale)


def probe_embeddings(model: EmbeddingModel) -> np.ndarray:
    with torch.no_grad():
        return model.eval().encode(PROBE_TEXTS, batch_size=len(PROBE_TEXTS)).numpy()


def _check(name: str, figures: dict, min_cosine: float) -> None:
    if not figures["min_cosine"] >= min_cosine:
        raise ToolchainError(f"merge gate: {name} min cosine {figures['min_cosine']:.8f} < "
                             f"{min_cosine} (max |diff| {figures['max_abs']:.3g}); nothing written")


def merge_run(run_dir: str | Path, out: str | Path | None = None,
              min_cosine: float = GATE_MIN_COSINE, lora_scale: float = 1.0, log=print) -> dict:
    """Merge a trained run into a model directory; returns the written manifest.

    Args:
        run_dir: runs/<preset>/<variant> (uses final/) or a checkpoint dir.
        out: output dir; default <run>/merged.
        min_cosine: the gate on every probe text.
        lora_scale: factor on the LoRA delta before folding (1: the trained model).
        log: progress printer.

    Raises:
        ToolchainError: no/tampered checkpoint, or a failed gate (nothing written).
    """
    checkpoint, default_out = find_checkpoint(Path(run_dir))
    if (checkpoint / MANIFEST).is_file():
        read_manifest(checkpoint)  # refuse a changed checkpoint file
    target = Path(out) if out else default_out
    model, preset, info = load_trained(checkpoint)
    if lora_scale != 1.0:
        scale_lora(model, lora_scale)
    adapter = probe_embeddings(model)
    model = fold_lora(model)
    gate = {"min_cosine_required": min_cosine, "probe_texts": len(PROBE_TEXTS), "dtype": "float32",
            "merged_vs_adapter": compare(probe_embeddings(model), adapter)}
    _check("merged vs adapter", gate["merged_vs_adapter"], min_cosine)
    merge_info = {"source_run": str(Path(run_dir).resolve()),
                  "checkpoint": str(checkpoint.resolve()), "preset": preset.name,
                  "trained_json_sha256": sha256_file(checkpoint / TRAINED_JSON),
                  "lora": info.get("lora"), "lora_scale": lora_scale,
                  "init_seed": info.get("train", {}).get("seed"),
                  "data_seed": info.get("train", {}).get("data_seed"),
                  "method": "peft merge_and_unload"}
    with atomic_dir(target) as tmp:
        save_embedding_model(model, tmp, extra={"merge": merge_info})
        gate["reloaded_vs_adapter"] = compare(probe_embeddings(load_embedding_model(tmp)), adapter)
        _check("saved and reloaded vs adapter", gate["reloaded_vs_adapter"], min_cosine)
        fields = read_manifest(tmp, verify=False)
        fields.pop("files")
        fields["merge"]["gate"] = gate
        manifest = write_manifest(tmp, fields)
    merged, reloaded = gate["merged_vs_adapter"], gate["reloaded_vs_adapter"]
    log(f"merged {checkpoint} -> {target}: vs adapter, merged min cosine "
        f"{merged['min_cosine']:.8f} max|d| {merged['max_abs']:.2e}; reloaded min cosine "
        f"{reloaded['min_cosine']:.8f} max|d| {reloaded['max_abs']:.2e} (gate {min_cosine})")
    return manifest

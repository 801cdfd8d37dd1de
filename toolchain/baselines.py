"""Quality baselines: what the trained variants are held against, as artifact directories that
the bench opens like any model (``Embedder.from_model_dir``, ``poolattn bench quality``).

    untrained-eos    the preset's backbone, untouched: EOS state, causal (m1 with no training)
    untrained-mean   the same backbone: masked mean of the last layer, causal
    minilm-peer      all-MiniLM-L6-v2, a small trained embedding model, at the preset's max_length

Each is written to ``runs/<preset>/<name>/<profile>/`` (merged-model format for the untrained
ones: backbone/ + pooling/ + manifest.json with sha256s; ``toolchain.peer`` format for the peer),
atomically, with a ``baseline`` manifest field saying what it is. Register more with
``register_baseline`` and a builder per ``kind`` in ``BUILDERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toolchain.contract import Attention, Pooling, Variant
from toolchain.errors import ToolchainError
from toolchain.paths import runs_dir
from toolchain.presets import Preset, load_preset


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: ``kind`` picks its builder ("untrained" or "peer")."""

    name: str  # also its run directory: runs/<preset>/<name>/
    kind: str
    profile: str  # artifact directory inside the run
    description: str
    variant: Variant | None = None  # untrained: a parameter-free head x attention, named as the baseline
    asset: str | None = None  # peer: the registry asset with its files


BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> Baseline:
    """Add a baseline; its name must not be a variant's (runs/<preset>/<name> is shared)."""
    from toolchain.modeling.variants import VARIANTS

    if baseline.name in BASELINES or baseline.name in VARIANTS:
        raise ValueError(f"baseline {baseline.name!r} collides with a registered name")
    if baseline.kind not in BUILDERS:
        raise ValueError(f"baseline kind {baseline.kind!r} has no builder")
    BASELINES[baseline.name] = baseline
    return baseline


def _build_untrained(baseline: Baseline, preset: Preset, target: Path,
                     source: Path | None) -> dict:
    """The preset's backbone with a parameter-free pooling head: no LoRA, no training."""
    from toolchain.modeling.model import build_embedding_model, save_embedding_model

    if source is not None:
        raise ToolchainError(f"baseline {baseline.name}: takes no --source (it is built from "
                             f"preset {preset.name})")
    model = build_embedding_model(preset, baseline.variant)
    if any(True for _ in model.head.parameters()):
        raise ToolchainError(f"baseline {baseline.name}: pooling {baseline.variant.pooling!r} has "
                             f"trainable parameters; an untrained baseline needs a fixed one")
    info = {"name": baseline.name, "kind": baseline.kind, "preset": preset.name,
            "description": baseline.description, "trained": False,
            "backbone": {"source": preset.backbone.source, "asset": preset.backbone.asset,
                         "architecture": preset.backbone.architecture,
                         "path": preset.backbone.path}}
    return save_embedding_model(model, target, extra={"baseline": info})


def _build_peer(baseline: Baseline, preset: Preset, target: Path, source: Path | None) -> dict:
    """Copy the peer's registry asset (or ``source``) into a peer artifact dir at the preset's
    max_length."""
    from toolchain.assets import ASSETS, fetch_asset
    from toolchain.atomic import sha256_file
    from toolchain.peer import save_peer

    directory = Path(source) if source is not None else fetch_asset(baseline.asset)
    asset = ASSETS.get(baseline.asset) if source is None else None
    info = {"name": baseline.name, "kind": baseline.kind, "preset": preset.name,
            "description": baseline.description, "trained": True,
            "source": str(directory) if source is not None else f"asset {baseline.asset}",
            "requirement": asset.requirement if asset else None,
            "wheel_sha256": asset.sha256 if asset else None,
            "weights_sha256": sha256_file(directory / "model.safetensors"),
            "max_length_from": f"preset {preset.name} max_length (the exported contract)"}
    return save_peer(directory, target, baseline.name, preset.max_length,
                     extra={"baseline": info})


BUILDERS: dict[str, Callable[[Baseline, Preset, Path, Path | None], dict]] = {
    "untrained": _build_untrained, "peer": _build_peer}

def _untrained(name: str, pooling: Pooling, description: str) -> Baseline:
    return Baseline(name, "untrained", "merged", description,
                    variant=Variant(name, pooling, Attention.CAUSAL, description))


register_baseline(_untrained("untrained-eos", Pooling.EOS_LAST,
                             "untrained backbone, EOS-last pooling, causal"))
register_baseline(_untrained("untrained-mean", Pooling.MEAN,
                             "untrained backbone, masked mean pooling, causal"))
register_baseline(Baseline("minilm-peer", "peer", "model",
                           "all-MiniLM-L6-v2 (trained peer), mean pooling",
                           asset="all-minilm-l6-v2"))


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ToolchainError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name]


def baseline_dir(preset: str, name: str) -> Path:
    """runs/<preset>/<name>/<profile>: where ``build_baseline`` writes."""
    return runs_dir() / preset / name / get_baseline(name).profile


def build_baseline(preset: Preset | str, name: str, out: str | Path | None = None,
                   source: str | Path | None = None, log=print) -> dict:
    """Build one baseline for a preset; returns the written manifest.

    Args:
        preset: a Preset or preset name.
        name: a registered baseline (``BASELINES``).
        out: the artifact directory (default ``baseline_dir``).
        source: peer only: a local sentence-transformers directory instead of the asset.

    Raises:
        ToolchainError: unknown preset or baseline, or its files cannot be built.
    """
    preset = load_preset(preset) if isinstance(preset, str) else preset
    baseline = get_baseline(name)
    target = Path(out) if out else baseline_dir(preset.name, name)
    manifest = BUILDERS[baseline.kind](baseline, preset, target,
                                       Path(source) if source is not None else None)
    log(f"{name}: {baseline.description} -> {target} (max_length {manifest['max_length']})")
    return manifest


def existing_baselines(preset: str, names: list[str] | None = None) -> list[str]:
    """Registered baselines (or ``names``) whose run directory holds an artifact."""
    chosen = names if names is not None else list(BASELINES)
    for name in chosen:
        get_baseline(name)
    root = runs_dir() / preset
    return [n for n in chosen
            if any((p / "manifest.json").is_file() for p in (root / n).glob("*"))]

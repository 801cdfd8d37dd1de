"""Find and open what gets benchmarked: exported ONNX artifacts and merged PyTorch model dirs.

Layout (from `make export`): runs/<preset>/<variant>/{onnx-fp32, onnx-int8, merged}/, each with
a manifest.json. Artifacts open through ``toolchain.embedder.Embedder``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from toolchain.atomic import read_manifest
from toolchain.errors import ToolchainError
from toolchain.paths import runs_dir

PROFILE_DIRS = ("onnx-fp32", "onnx-int8", "merged")


@dataclass(frozen=True)
class Artifact:
    """A benchmarkable directory: ``runtime`` "onnx" or "torch"; ``label`` "m1/onnx-fp32"."""

    path: Path
    runtime: str
    variant: str
    profile: str

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.profile}"


def inspect_artifact(path: str | Path) -> Artifact:
    """Classify a directory from its manifest (sha256s checked) and contents.

    Raises:
        ToolchainError: not a directory, no/invalid manifest, or neither ONNX nor a model dir.
    """
    path = Path(path)
    if not path.is_dir():
        raise ToolchainError(f"{path}: artifact directory does not exist")
    manifest = read_manifest(path)
    if any(path.glob("*.onnx")):
        runtime = "onnx"
    elif (path / "backbone").is_dir():
        runtime = "torch"
    else:
        raise ToolchainError(f"{path}: neither an ONNX artifact (*.onnx) nor a model directory "
                             f"(backbone/)")
    variant = manifest.get("variant") or path.parent.name
    return Artifact(path, runtime, str(variant), path.name)


def torch_source(artifact: Artifact) -> Path | None:
    """The merged PyTorch model directory behind an artifact (itself for a model dir)."""
    if artifact.runtime == "torch":
        return artifact.path
    manifest = read_manifest(artifact.path, verify=False)
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    candidates = [artifact.path / source["model_dir_relative"]] if source.get(
        "model_dir_relative") else []
    if isinstance(manifest.get("model_dir"), str):
        candidates.append(Path(manifest["model_dir"]))
    for candidate in candidates:
        if (candidate / "backbone").is_dir():
            return candidate.resolve()
    sibling = artifact.path.parent / "merged"
    return sibling if (sibling / "backbone").is_dir() else None


def preset_artifacts(preset: str, variants: Sequence[str],
                     profiles: Sequence[str] = PROFILE_DIRS) -> list[Artifact]:
    """Every existing runs/<preset>/<variant>/<profile> directory, in variant then profile order.

    Raises:
        ToolchainError: no artifacts at all (with the command that makes them).
    """
    found = []
    for variant in variants:
        for profile in profiles:
            path = runs_dir() / preset / variant / profile
            if (path / "manifest.json").is_file():
                found.append(inspect_artifact(path))
    if not found:
        raise ToolchainError(f"no artifacts under {runs_dir() / preset} for variants "
                             f"{' '.join(variants)}; run `make train export PRESET={preset}`")
    return found


def open_artifact(artifact: Artifact, provider: str = "cpu", threads: int | None = None):
    """An ``Embedder`` for the artifact (ONNX Runtime or PyTorch)."""
    try:
        from toolchain.embedder import Embedder
    except ImportError as err:
        raise ToolchainError(f"toolchain.embedder is not available: {err}") from None
    if artifact.runtime == "onnx":
        return Embedder.from_artifact(artifact.path, provider=provider, threads=threads)
    return Embedder.from_model_dir(artifact.path, device="cpu", threads=threads)

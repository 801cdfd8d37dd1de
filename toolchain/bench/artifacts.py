"""Find and open what gets benchmarked: exported ONNX artifacts, merged PyTorch model dirs and
the quality baselines (``toolchain.baselines``).

Layout (from `make export`): runs/<preset>/<run>/{onnx-fp32, onnx-int8, merged}/, each with
a manifest.json; <run> is a variant (m1..m5, or pooling+attention) or a baseline. An artifact's
label is its run: ``<preset>/<run>/<profile>`` from the path, unless given explicitly.
Artifacts open through ``toolchain.embedder.Embedder``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from toolchain.atomic import read_manifest
from toolchain.contract import source_model_dir
from toolchain.errors import ToolchainError
from toolchain.paths import runs_dir

PROFILE_DIRS = ("onnx-fp32", "onnx-int8", "merged")
# manifest kind -> runtime, for directories that are neither *.onnx nor backbone/
KIND_RUNTIMES = {"sentence_encoder": "torch"}
LABEL_CHARS = re.compile(r"[^A-Za-z0-9._+=@-]+")


@dataclass(frozen=True)
class Artifact:
    """A benchmarkable directory: ``runtime`` "onnx" or "torch".

    ``variant`` is the manifest's (m1..m5, pooling+attention, or a baseline's name), ``run``
    the run directory's name, ``role`` "variant" for trained runs or the baseline's kind
    ("untrained", "peer"); ``label`` "<preset>/<run>/<profile>" unless ``name`` is set.
    """

    path: Path
    runtime: str
    variant: str
    profile: str
    preset: str = ""
    run: str = ""
    role: str = "variant"
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or "/".join(p for p in (self.preset, self.run or self.variant,
                                                 self.profile) if p)

    def labelled(self, label: str) -> "Artifact":
        """The same artifact under an explicit label (``--label``)."""
        if not label.strip() or label != label.strip():
            raise ToolchainError(f"{self.path}: label {label!r} must be a non-empty name "
                                 f"without surrounding spaces")
        return replace(self, name=label)


def result_dir(label: str) -> Path:
    """Where a label's result files go below an output directory: one folder per label part,
    unsafe characters replaced (``check_labels`` refuses two labels that land together)."""
    parts = [LABEL_CHARS.sub("-", p).strip(".") or "-" for p in label.split("/") if p]
    return Path(*parts) if parts else Path("-")


def check_labels(artifacts: Sequence[Artifact],
                 existing: dict[str, str] | None = None) -> None:
    """Refuse, before anything is evaluated, two artifacts with one label (or one result
    folder), and a label already in ``existing`` ({label: artifact path}) for another path.

    Raises:
        ToolchainError: naming both paths and how to tell them apart.
    """
    seen: dict[str, Artifact] = {}
    folders: dict[Path, Artifact] = {}
    for artifact in artifacts:
        label = artifact.label
        other = seen.get(label) or folders.get(result_dir(label))
        if other is not None:
            raise ToolchainError(f"label collision: {other.path} and {artifact.path} are both "
                                 f"{other.label!r}" + (f" / {label!r}" if other.label != label
                                                        else "")
                                 + "; give each its own --label")
        seen[label], folders[result_dir(label)] = artifact, artifact
        before = (existing or {}).get(label)
        if before is not None and Path(before).resolve() != artifact.path.resolve():
            raise ToolchainError(f"label collision: {label!r} is already in the results for "
                                 f"{before}, not {artifact.path}; give --label")


def inspect_artifact(path: str | Path, label: str | None = None) -> Artifact:
    """Classify a directory from its manifest (sha256s checked) and contents.

    The default label comes from the path runs/<preset>/<run>/<profile>.

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
    elif manifest.get("kind") in KIND_RUNTIMES:
        runtime = KIND_RUNTIMES[manifest["kind"]]
    else:
        raise ToolchainError(f"{path}: neither an ONNX artifact (*.onnx) nor a model directory "
                             f"(backbone/)")
    where = path.resolve()
    variant = manifest.get("variant") or where.parent.name
    baseline = manifest.get("baseline") if isinstance(manifest.get("baseline"), dict) else {}
    artifact = Artifact(path, runtime, str(variant), path.name, preset=where.parent.parent.name,
                        run=where.parent.name, role=str(baseline.get("kind", "variant")))
    source = torch_source(artifact) if runtime == "onnx" and not baseline else None
    if source is not None:  # an export of a baseline is a baseline too
        origin = read_manifest(source, verify=False).get("baseline")
        if isinstance(origin, dict):
            artifact = replace(artifact, role=str(origin.get("kind", "variant")))
    return artifact.labelled(label) if label is not None else artifact


def torch_source(artifact: Artifact) -> Path | None:
    """The merged PyTorch model directory behind an artifact (itself for a model dir)."""
    if artifact.runtime == "torch":
        return artifact.path if (artifact.path / "backbone").is_dir() else None
    manifest = read_manifest(artifact.path, verify=False)
    source = source_model_dir(artifact.path, manifest, required=False)
    return source.resolve() if source is not None else None


def preset_artifacts(preset: str, variants: Sequence[str],
                     profiles: Sequence[str] = PROFILE_DIRS,
                     required: bool = True) -> list[Artifact]:
    """Every existing runs/<preset>/<run>/<profile> directory, in run then profile order.

    Args:
        variants: run directory names (variants, or baselines).
        required: raise when nothing is found.

    Raises:
        ToolchainError: no artifacts at all (with the command that makes them).
    """
    found = []
    for variant in variants:
        for profile in profiles:
            path = runs_dir() / preset / variant / profile
            if (path / "manifest.json").is_file():
                found.append(inspect_artifact(path))
    if not found and required:
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

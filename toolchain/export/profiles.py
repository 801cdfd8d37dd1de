"""Export profiles: data files export/<name>.yaml (fp32, int8, fp16), read and validated here.

A profile names a precision and a quantization (a pair some transform registers:
toolchain/export/transforms/), the ORT session settings used to run it, and the gates `verify`
applies. The YAML files carry the documentation of each profile in their header
comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.export.transforms import registered_pairs
from toolchain.paths import project_root
from toolchain.yamlfile import read_yaml_mapping

OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass
class Gates:
    """Bounds `verify` enforces. A ``None`` bound is measured and reported, not gated."""

    parity_max_abs: float | None = field(default=1e-4, metadata={"help": "ORT vs torch"})
    parity_min_cosine: float = field(default=0.9999, metadata={"help": "ORT vs torch, per text"})
    invariance_max_abs: float | None = field(default=1e-4, metadata={"help": "batch/padding"})
    invariance_min_cosine: float = field(default=0.9999, metadata={"help": "batch/padding"})
    unit_norm_tol: float = field(default=1e-4, metadata={"help": "| ||e|| - 1 |"})
    probe_tol: float = field(default=1e-5, metadata={"help": "causal if token 0 moves less"})


@dataclass
class Profile:
    """One export profile (see export/*.yaml)."""

    name: str
    description: str = ""
    precision: str = "fp32"
    quantization: str = "none"
    quantize: dict = field(default_factory=dict)
    fp16: dict = field(default_factory=dict)
    session: dict = field(default_factory=lambda: {"graph_optimization_level": "all"})
    gates: Gates = field(default_factory=Gates)
    # false: the graph as exported (opset 18, no com.microsoft fusions) for older runtimes
    fuse: bool = True
    # onnxruntime versions the graph is proven on (benchmarks/deploy/old_ort.py); the manifest
    # records them beside the oldest release its opsets need
    runtime_targets: list = field(default_factory=list)
    path: Path | None = None

    def to_dict(self) -> dict:
        skip = ("path", "gates")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["gates"] = {f.name: getattr(self.gates, f.name) for f in fields(Gates)}
        return out


def profile_dir() -> Path:
    return project_root() / "export"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.yaml"))


def _check_choice(value, choices: tuple, where: str) -> None:
    if value not in choices:
        raise ToolchainError(f"{where}: {value!r} not one of {', '.join(choices)}")


def load_profile(name_or_path: str | Path) -> Profile:
    """Load export/<name>.yaml (or a path) into a validated Profile.

    Raises:
        ToolchainError: unknown profile, invalid YAML (with line), unknown or bad fields.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = profile_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ToolchainError(f"unknown export profile {str(name_or_path)!r}; "
                             f"known: {', '.join(list_profiles())}")
    data = read_yaml_mapping(path)
    known = {f.name for f in fields(Profile)} - {"path"}
    unknown = set(data) - known
    if unknown:
        raise ToolchainError(f"{path}: unknown field(s) {sorted(unknown)}")
    gates = data.pop("gates", {}) or {}
    gate_names = {f.name for f in fields(Gates)}
    if set(gates) - gate_names:
        raise ToolchainError(f"{path}: gates: unknown field(s) {sorted(set(gates) - gate_names)}")
    profile = Profile(**{"name": path.stem, **data}, gates=Gates(**gates), path=path)
    pairs = registered_pairs()
    _check_choice(profile.precision, tuple(dict.fromkeys(p for p, _ in pairs)),
                  f"{path}: precision")
    _check_choice(profile.quantization, tuple(dict.fromkeys(q for _, q in pairs)),
                  f"{path}: quantization")
    level = (profile.session or {}).get("graph_optimization_level", "all")
    _check_choice(level, OPT_LEVELS, f"{path}: session.graph_optimization_level")
    if (profile.precision, profile.quantization) not in pairs:
        raise ToolchainError(f"{path}: precision {profile.precision} does not combine with "
                             f"quantization {profile.quantization}; transforms exist for "
                             f"{', '.join(f'{p}+{q}' for p, q in pairs)}")
    return profile

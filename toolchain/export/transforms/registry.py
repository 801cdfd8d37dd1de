"""The registry of profile transforms: a profile's (precision, quantization) pair names the
transform that turns the exported fp32 model.onnx into the profile's model.onnx.

It imports none of them: each transform module registers itself with :func:`register_transform`
when imported, and the package (toolchain/export/transforms/__init__.py) imports them all. The
registered pairs are the one list of precisions and quantizations a profile may name
(:func:`registered_pairs`; export/<name>.yaml is checked against it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from toolchain.errors import ToolchainError
from toolchain.export.graph_files import graph_files

if TYPE_CHECKING:  # annotations only: the profiles module reads this registry
    from toolchain.export.profiles import Profile

# (source dir, target dir, profile, external data) -> details (counts), if any
Transform = Callable[[Path, Path, "Profile", bool], "dict | None"]
TRANSFORMS: dict[tuple[str, str], Transform] = {}
CALIBRATING: set[tuple[str, str]] = set()  # transforms that read the calibration file


def register_transform(precision: str, quantization: str,
                       calibrates: bool = False) -> Callable[[Transform], Transform]:
    """Decorator: ``fn`` writes profiles of (precision, quantization); ``calibrates``: it reads
    the export's calibration feeds (toolchain.export.calibration)."""
    def wrap(fn: Transform) -> Transform:
        if (precision, quantization) in TRANSFORMS:
            raise ValueError(f"transform {(precision, quantization)} registered twice")
        TRANSFORMS[(precision, quantization)] = fn
        if calibrates:
            CALIBRATING.add((precision, quantization))
        return fn

    return wrap


def registered_pairs() -> list[tuple[str, str]]:
    """The (precision, quantization) pairs a profile may name, in registration order."""
    return list(TRANSFORMS)


def needs_calibration(profile: Profile) -> bool:
    return (profile.precision, profile.quantization) in CALIBRATING


def apply_profile(source: Path, target: Path, profile: Profile, external: bool) -> dict:
    """Write ``profile``'s model.onnx (+ data) into ``target`` from the fp32 export in ``source``.

    Returns:
        {"transform": name, "seconds": float, "files": [...], "details": what the transform
        reports (counts), or {}}.
    """
    key = (profile.precision, profile.quantization)
    if key not in TRANSFORMS:
        raise ToolchainError(f"{profile.path}: no transform for precision {key[0]} with "
                             f"quantization {key[1]}")
    start = time.perf_counter()
    details = TRANSFORMS[key](Path(source), Path(target), profile, external)
    return {"transform": TRANSFORMS[key].__name__, "seconds": round(time.perf_counter() - start, 2),
            "files": graph_files(external), "details": details or {}}

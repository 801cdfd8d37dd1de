"""Profile transforms of the exported fp32 graph (int8, fp16) and ORT session settings.

One registry: a profile's (precision, quantization) pair names the transform that turns the
fp32 model.onnx into the profile's model.onnx. fp32 is the identity (the exporter's own
onnxscript optimiser has already run; ORT optimises the graph again when the session loads).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from toolchain.errors import ToolchainError
from toolchain.export.onnx_export import DATA_FILE, MODEL_FILE, PROBE_VALUE
from toolchain.export.profiles import Profile

Transform = Callable[[Path, Path, Profile, bool], None]
TRANSFORMS: dict[tuple[str, str], Transform] = {}


def register_transform(precision: str, quantization: str) -> Callable[[Transform], Transform]:
    def wrap(fn: Transform) -> Transform:
        if (precision, quantization) in TRANSFORMS:
            raise ValueError(f"transform {(precision, quantization)} registered twice")
        TRANSFORMS[(precision, quantization)] = fn
        return fn

    return wrap


def _files(directory: Path, external: bool) -> list[str]:
    return [MODEL_FILE] + ([DATA_FILE] if external else [])


@register_transform("fp32", "none")
def copy_fp32(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """The exported graph as is; hard-linked when possible (the source is a scratch copy)."""
    for name in _files(source, external):
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copyfile(source / name, target / name)


@register_transform("fp32", "dynamic_int8")
def quantize_int8(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """ORT dynamic quantization: int8 MatMul weights, activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = profile.quantize or {}
    weight_types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    weight_type = settings.get("weight_type", "qint8")
    if weight_type not in weight_types:
        raise ToolchainError(f"{profile.path}: quantize.weight_type {weight_type!r} not one of "
                             f"{', '.join(weight_types)}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger every time
    try:
        quantize_dynamic(str(source / MODEL_FILE), str(target / MODEL_FILE),
                         op_types_to_quantize=list(settings.get("op_types", ["MatMul"])),
                         weight_type=weight_types[weight_type],
                         per_channel=bool(settings.get("per_channel", False)),
                         reduce_range=bool(settings.get("reduce_range", False)),
                         use_external_data_format=external)
    finally:
        root.setLevel(level)
    _rename_external(target, external)


@register_transform("fp32", "blockwise_int8")
def quantize_blockwise_int8(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """ORT MatMulNBits: every MatMul with a constant weight gets int8 weights with one symmetric
    scale per block of ``block_size`` inputs; ``accuracy_level`` 4 computes in int8, quantising
    the activations per row and block (so a text's result does not depend on its batch
    partners). Attention products (activation x activation) stay fp32."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    settings = profile.quantize or {}
    block_size = int(settings.get("block_size", 32))
    if block_size < 16 or block_size & (block_size - 1):
        raise ToolchainError(f"{profile.path}: quantize.block_size {block_size} is not a power "
                             f"of 2 >= 16 (MatMulNBits)")
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source / MODEL_FILE)), bits=8,
                                     block_size=block_size, is_symmetric=True,
                                     accuracy_level=int(settings.get("accuracy_level", 4)),
                                     op_types_to_quantize=("MatMul",))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantizer.process()
    finally:
        root.setLevel(level)
    _save(quantizer.model.model, target, external)


@register_transform("fp16", "none")
def convert_fp16(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """fp16 weights and compute; the profile's keep_fp32_ops (norms, softmax, ...) stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source / MODEL_FILE))
    keep = list((profile.fp16 or {}).get("keep_fp32_ops", []))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=keep,
                                         disable_shape_infer=external)
    _save(converted, target, external)


def _save(model, target: Path, external: bool) -> None:
    import onnx

    onnx.save_model(model, str(target / MODEL_FILE), save_as_external_data=external,
                    all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)


def _rename_external(target: Path, external: bool) -> None:
    """quantize_dynamic names its data file itself; rewrite it as the one model.onnx.data."""
    if not external:
        return
    import onnx

    model = onnx.load(str(target / MODEL_FILE))
    for stray in target.glob("*.data"):
        stray.unlink()
    _save(model, target, external)


def apply_profile(source: Path, target: Path, profile: Profile, external: bool) -> dict:
    """Write ``profile``'s model.onnx (+ data) into ``target`` from the fp32 export in ``source``.

    Returns:
        {"transform": name, "seconds": float, "files": [...]}.
    """
    key = (profile.precision, profile.quantization)
    if key not in TRANSFORMS:
        raise ToolchainError(f"{profile.path}: no transform for precision {key[0]} with "
                             f"quantization {key[1]}")
    start = time.perf_counter()
    TRANSFORMS[key](Path(source), Path(target), profile, external)
    return {"transform": TRANSFORMS[key].__name__, "seconds": round(time.perf_counter() - start, 2),
            "files": _files(target, external)}


def with_probe_output(model_path: Path):
    """The shipped graph with PROBE_VALUE re-exposed as a second output (weights not loaded).

    Returns an onnx.ModelProto whose external data (if any) still points next to ``model_path``.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    produced = {out for node in model.graph.node for out in node.output}
    if PROBE_VALUE not in produced:
        raise ToolchainError(f"{model_path}: graph has no internal value {PROBE_VALUE!r}; "
                             "cannot probe its attention mode")
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(PROBE_VALUE))
    return model

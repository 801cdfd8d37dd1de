"""The transforms that ONNX Runtime's own tools make: fp32 as exported, dynamic, blockwise
(MatMulNBits) and static (QDQ) int8, and fp16."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import ToolchainError
from toolchain.export.calibration import read_calibration
from toolchain.export.graph_files import (graph_files, matmuls_in_modules, rename_external,
                                          save_graph)
from toolchain.export.onnx_export import MODEL_FILE
from toolchain.export.transforms.registry import register_transform

if TYPE_CHECKING:
    from toolchain.export.profiles import Profile


@contextlib.contextmanager
def _ort_quantizer_quiet():
    """ORT's quantizers log hints on the root logger on every call: hold it at ERROR."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@register_transform("fp32", "none")
def copy_fp32(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """The exported graph as is; hard-linked when possible (the source is a scratch copy). The
    exporter's onnxscript optimiser has already run; ORT optimises it again when it loads."""
    for name in graph_files(external):
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
    with _ort_quantizer_quiet():
        quantize_dynamic(str(source / MODEL_FILE), str(target / MODEL_FILE),
                         op_types_to_quantize=list(settings.get("op_types", ["MatMul"])),
                         weight_type=weight_types[weight_type],
                         per_channel=bool(settings.get("per_channel", False)),
                         reduce_range=bool(settings.get("reduce_range", False)),
                         use_external_data_format=external)
    rename_external(target, external)


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
    with _ort_quantizer_quiet():
        quantizer.process()
    save_graph(quantizer.model.model, target, external)


@register_transform("fp32", "static_int8", calibrates=True)
def quantize_static_int8(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """ORT static quantization, QDQ: int8 weights (one scale per output channel), uint8
    activations with fixed MinMax scales calibrated on CALIBRATION_TEXTS, so a text's embedding
    does not depend on its batch partners. MatMuls in the modules the profile lists under
    ``keep_fp32`` stay fp32 (:func:`~toolchain.export.graph_files.matmuls_in_modules`)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: list[dict]) -> None:
            self.feeds = list(feeds)

        def get_next(self) -> dict | None:
            return self.feeds.pop(0) if self.feeds else None

    settings = profile.quantize or {}
    feeds = read_calibration(source, bool(settings.get("calibrate_random_ids", True)))
    keep = matmuls_in_modules(onnx.load(str(source / MODEL_FILE), load_external_data=False),
                              list(settings.get("keep_fp32", [])))
    with _ort_quantizer_quiet():
        quantize_static(str(source / MODEL_FILE), str(target / MODEL_FILE),
                        Feeds(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=True,
                        reduce_range=bool(settings.get("reduce_range", True)),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
                        use_external_data_format=external,
                        calibration_providers=["CPUExecutionProvider"])
    rename_external(target, external)


@register_transform("fp16", "none")
def convert_fp16(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """fp16 weights and compute; the profile's keep_fp32_ops (norms, softmax, ...) stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source / MODEL_FILE))
    keep = list((profile.fp16 or {}).get("keep_fp32_ops", []))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=keep,
                                         disable_shape_infer=external)
    save_graph(converted, target, external)

"""Profile transforms of the exported fp32 graph (int8, fp16) and ORT session settings.

One registry: a profile's (precision, quantization) pair names the transform that turns the
fp32 model.onnx into the profile's model.onnx. fp32 is the identity (the exporter's own
onnxscript optimiser has already run; ORT optimises the graph again when the session loads).
The export's scratch directory also holds CALIBRATION_FILE (CALIBRATION_TEXTS under the model's
contract, and random ids) for transforms that calibrate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from toolchain.errors import ToolchainError
from toolchain.export.onnx_export import DATA_FILE, MODEL_FILE, PROBE_VALUE
from toolchain.export.profiles import Profile

Transform = Callable[[Path, Path, Profile, bool], dict | None]  # returns details (counts), if any
CALIBRATION_FILE = "calibration.npz"
TRANSFORMS: dict[tuple[str, str], Transform] = {}
CALIBRATING: set[tuple[str, str]] = set()  # transforms that read CALIBRATION_FILE


def register_transform(precision: str, quantization: str,
                       calibrates: bool = False) -> Callable[[Transform], Transform]:
    def wrap(fn: Transform) -> Transform:
        if (precision, quantization) in TRANSFORMS:
            raise ValueError(f"transform {(precision, quantization)} registered twice")
        TRANSFORMS[(precision, quantization)] = fn
        if calibrates:
            CALIBRATING.add((precision, quantization))
        return fn

    return wrap


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
    with _ort_quantizer_quiet():
        quantize_dynamic(str(source / MODEL_FILE), str(target / MODEL_FILE),
                         op_types_to_quantize=list(settings.get("op_types", ["MatMul"])),
                         weight_type=weight_types[weight_type],
                         per_channel=bool(settings.get("per_channel", False)),
                         reduce_range=bool(settings.get("reduce_range", False)),
                         use_external_data_format=external)
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
    with _ort_quantizer_quiet():
        quantizer.process()
    save_graph(quantizer.model.model, target, external)


def write_calibration(directory: Path, tokenizer, vocab_size: int, random_rows: int = 16,
                      statistics_rows: int = 48) -> Path:
    """Calibration feeds, one text a batch, into an .npz: CALIBRATION_TEXTS as the model will see
    them, and ``random_rows`` texts of random token ids, so that fixed activation scales also
    hold inputs far from everyday prose (code, rare scripts, junk), where clipped outliers would
    otherwise cost the most. Their lengths spread geometrically from 1 token to max_length, as
    verify's random shapes run from 1 token (the rows were 8, of 8 to 64 tokens, until the int8
    profile's calibration was measured to generalise poorly: export/int8.yaml). Then
    ``statistics_rows`` more random-id rows of uniform lengths, for statistics that need more
    tokens than the feeds a search runs over and over (the int8 profile's GPTQ rounding)."""
    import numpy as np

    from toolchain.probe_texts import CALIBRATION_TEXTS

    rows = [tokenizer([text]) for text in CALIBRATION_TEXTS]
    rows = [{k: v.numpy() for k, v in batch.items()} for batch in rows]
    rng = np.random.default_rng(2027)  # not verify's seeds: its random shapes stay unseen
    for i in range(random_rows + statistics_rows):
        length = (max(1, round(tokenizer.max_length ** (i / max(random_rows - 1, 1))))
                  if i < random_rows else int(rng.integers(1, tokenizer.max_length + 1)))
        rows.append({"input_ids": rng.integers(3, vocab_size, (1, length), dtype=np.int64),
                     "attention_mask": np.ones((1, length), dtype=np.int64)})
    arrays = {}
    for i, row in enumerate(rows):
        arrays[f"input_ids_{i}"] = row["input_ids"]
        arrays[f"attention_mask_{i}"] = row["attention_mask"]
    arrays["random_rows"] = np.array(random_rows)
    arrays["statistics_rows"] = np.array(statistics_rows)
    np.savez(directory / CALIBRATION_FILE, **arrays)
    return directory / CALIBRATION_FILE


def needs_calibration(profile: Profile) -> bool:
    return (profile.precision, profile.quantization) in CALIBRATING


def read_calibration(directory: Path, random_rows: bool = True,
                     statistics_rows: bool = False) -> list[dict]:
    """The feeds written by :func:`write_calibration` (no pickles: plain arrays): the texts,
    with or without its random-id rows, and with or without the rows kept for statistics."""
    import numpy as np

    path = directory / CALIBRATION_FILE
    if not path.is_file():
        raise ToolchainError(f"{path}: missing; static quantization calibrates on the texts the "
                             f"export writes there (poolattn export)")
    with np.load(path, allow_pickle=False) as data:
        total = len([k for k in data.files if k.startswith("input_ids_")])
        extra = int(data["statistics_rows"]) if "statistics_rows" in data.files else 0
        if not random_rows:
            count = total - int(data["random_rows"]) - extra  # the texts
        else:
            count = total if statistics_rows else total - extra
        return [{"input_ids": data[f"input_ids_{i}"],
                 "attention_mask": data[f"attention_mask_{i}"]} for i in range(count)]


def matmuls_in_modules(model, patterns: list[str]) -> list[str]:
    """MatMul nodes that the exporter traced inside a module whose path contains one of
    ``patterns`` (the dynamo exporter records each node's module path in its metadata, under
    pkg.torch.onnx.name_scopes)."""
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        scopes = next((p.value for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(pattern in scopes for pattern in patterns):
            names.append(node.name)
    return names


@register_transform("fp32", "static_int8", calibrates=True)
def quantize_static_int8(source: Path, target: Path, profile: Profile, external: bool) -> None:
    """ORT static quantization, QDQ: int8 weights (one scale per output channel), uint8
    activations with fixed MinMax scales calibrated on CALIBRATION_TEXTS, so a text's embedding
    does not depend on its batch partners. MatMuls in the modules the profile lists under
    ``keep_fp32`` stay fp32 (:func:`matmuls_in_modules`)."""
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
    _rename_external(target, external)


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


def save_graph(model, target: Path, external: bool) -> None:
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
    save_graph(model, target, external)


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
            "files": _files(target, external), "details": details or {}}


def with_probe_output(model_path: Path):
    """The shipped graph with PROBE_VALUE re-exposed as a second output (weights not loaded),
    in the caller's token order where the graph compacts its tokens (the int8 profile).

    Returns an onnx.ModelProto whose external data (if any) still points next to ``model_path``.
    """
    import onnx

    from toolchain.export.padding_exact import gather_back_token_states

    model = onnx.load(str(model_path), load_external_data=False)
    produced = {out for node in model.graph.node for out in node.output}
    if PROBE_VALUE not in produced:
        raise ToolchainError(f"{model_path}: graph has no internal value {PROBE_VALUE!r}; "
                             "cannot probe its attention mode")
    gather_back_token_states(model, PROBE_VALUE)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(PROBE_VALUE))
    return model


# registered by importing (its transform needs the helpers above)
from toolchain.export import rowwise_int8  # noqa: E402,F401

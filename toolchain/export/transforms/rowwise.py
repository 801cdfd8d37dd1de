"""The int8 profile's transform: row-wise int8 with smoothing, fp32 outlier channels and groups,
GPTQ rounding, on a graph made padding-exact first (toolchain/export/rowwise_int8/ says why)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.export.calibration import read_calibration
from toolchain.export.graph_files import matmuls_in_modules, save_graph
from toolchain.export.onnx_export import MODEL_FILE
from toolchain.export.padding_exact import rewrite_padding_exact
from toolchain.export.rowwise_int8.fp32_search import choose_paths
from toolchain.export.rowwise_int8.rewrite import (FALLBACK_MASK, calibration_paths,
                                                   rewrite_rowwise_int8, weight_matmul_groups)
from toolchain.export.rowwise_int8.settings import RowwiseSettings
from toolchain.export.rowwise_int8.statistics import channel_statistics
from toolchain.export.transforms.registry import register_transform

if TYPE_CHECKING:
    from toolchain.export.profiles import Profile


@register_transform("fp32", "rowwise_int8", calibrates=True)
def quantize_rowwise_int8(source: Path, target: Path, profile: Profile, external: bool) -> dict:
    """Profile settings (quantize:), the why of each in toolchain/export/rowwise_int8/:
    smooth_alpha (0 = no smoothing), outlier_channels (fp32 channels per input), reduce_range
    (7-bit weights), keep_fp32 (module paths whose MatMuls stay fp32), target_cosine (0 = off,
    every group int8 with the outlier channels; else each group's path, int8, int8 with outlier
    channels or fp32, is chosen on the calibration feeds: rowwise_int8/fp32_search.py),
    activation_qmax (auto: the widest u8 codes this CPU sums without int16 saturation,
    toolchain/cpu.py), padding_exact (default on: sums over tokens rewritten padding-exact,
    toolchain/export/padding_exact/), compact_tokens (default on, with padding_exact: each row's
    real tokens moved to its front, and ONNX Attention kept as fused, exact that way:
    padding_exact/compaction.py), weight_rounding (nearest, or gptq: rowwise_int8/gptq.py on the
    calibration rows' X^T X)."""
    import onnx

    settings = RowwiseSettings.parse(profile.quantize, profile.path)
    alpha, outliers = settings.alpha, settings.outliers
    model = onnx.load(str(source / MODEL_FILE))
    exact = (rewrite_padding_exact(model, compact_tokens=settings.compact_tokens)
             if settings.padding_exact else {})
    keep = set(matmuls_in_modules(model, list(settings.keep_fp32)))
    groups = weight_matmul_groups(model, keep)
    needs_feeds = alpha > 0 or outliers > 0 or settings.target_cosine > 0 or settings.gptq
    feeds = read_calibration(source) if needs_feeds else []
    absmax = gram = None
    if alpha > 0 or outliers > 0 or settings.gptq:
        # GPTQ's X^T X also over the rows kept for statistics (more tokens than the feeds)
        extra = (read_calibration(source, statistics_rows=True)[len(feeds):]
                 if settings.gptq else None)
        absmax, gram = channel_statistics(source / MODEL_FILE, feeds, list(groups), extra)
    calibrated, restored, plain = {}, [], frozenset()
    if settings.target_cosine > 0:
        started = time.perf_counter()
        trial = copy.deepcopy(model)
        rewrite_rowwise_int8(trial, groups, settings.weight_qmax, absmax, alpha, outliers,
                             FALLBACK_MASK, gram=gram,
                             activation_qmax=settings.activation_qmax)
        paths = calibration_paths(outliers)
        calibrated = choose_paths(trial, feeds, len(groups), len(paths), settings.target_cosine)
        del trial
        chosen = dict(zip(groups, (paths[k] for k in calibrated.pop("paths"))))
        restored = [x for x, count in chosen.items() if count is None]
        plain = frozenset(x for x, count in chosen.items() if count == 0)
        keep |= {node.name for x in restored for node in groups.pop(x)}
        calibrated["seconds"] = time.perf_counter() - started
    counts = rewrite_rowwise_int8(model, groups, settings.weight_qmax, absmax, alpha, outliers,
                                  plain=plain, gram=gram,
                                  activation_qmax=settings.activation_qmax)
    save_graph(model, target, external)
    return {**counts, "padding_exact": exact, "kept_fp32": sorted(keep),
            "weight_rounding": settings.weight_rounding,
            "weight_qmax": settings.weight_qmax, "activation_qmax": settings.activation_qmax,
            "saturates_without_vnni": settings.saturates_without_vnni,
            "fp32_groups": len(restored),
            **{f"calibrated_{k}": round(v, 6) for k, v in calibrated.items()}}

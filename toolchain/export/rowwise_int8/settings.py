"""The row-wise int8 transform's profile settings (export/int8.yaml, ``quantize:``), parsed and
checked, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.errors import ToolchainError

WEIGHT_ROUNDINGS = ("nearest", "gptq")


@dataclass(frozen=True)
class RowwiseSettings:
    """A profile's ``quantize:`` settings for this transform, with their defaults (see
    toolchain/export/transforms/rowwise.py)."""

    alpha: float
    outliers: int
    weight_qmax: int
    target_cosine: float
    padding_exact: bool
    compact_tokens: bool
    keep_fp32: tuple[str, ...]
    weight_rounding: str  # one of WEIGHT_ROUNDINGS

    @property
    def gptq(self) -> bool:
        return self.weight_rounding == "gptq"

    @classmethod
    def parse(cls, settings: dict | None, where) -> RowwiseSettings:
        settings = settings or {}
        alpha = float(settings.get("smooth_alpha", 0.5))
        if not 0 <= alpha <= 1:
            raise ToolchainError(f"{where}: quantize.smooth_alpha {alpha} is not in [0, 1]")
        rounding = settings.get("weight_rounding", "nearest")
        if rounding not in WEIGHT_ROUNDINGS:
            raise ToolchainError(f"{where}: quantize.weight_rounding {rounding!r} is not one of "
                                 f"{', '.join(WEIGHT_ROUNDINGS)}")
        return cls(alpha=alpha, outliers=int(settings.get("outlier_channels", 0)),
                   weight_qmax=63 if settings.get("reduce_range", True) else 127,
                   target_cosine=float(settings.get("target_cosine", 0)),
                   padding_exact=bool(settings.get("padding_exact", True)),
                   compact_tokens=bool(settings.get("compact_tokens", True)),
                   keep_fp32=tuple(settings.get("keep_fp32", [])),
                   weight_rounding=rounding)

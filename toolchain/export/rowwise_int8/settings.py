"""The row-wise int8 transform's profile settings (export/int8.yaml, ``quantize:``), parsed and
checked, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.cpu import exact_activation_qmax, int8_pairs_saturate
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
    activation_qmax: int  # u8 codes span zero_point +- activation_qmax

    @property
    def gptq(self) -> bool:
        return self.weight_rounding == "gptq"

    @property
    def saturates_without_vnni(self) -> bool:
        """True where the graph's u8 x s8 pair sums can overflow int16 on an AVX2-only CPU."""
        return int8_pairs_saturate(self.weight_qmax, self.activation_qmax, frozenset())

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
        weight_qmax = 63 if settings.get("reduce_range", True) else 127
        # auto: the widest codes this CPU sums exactly (127 with 7-bit weights everywhere; with
        # 8-bit weights 127 where VNNI/AMX exist, 64 on AVX2 alone, toolchain/cpu.py)
        activation_qmax = settings.get("activation_qmax", "auto")
        if activation_qmax == "auto":
            activation_qmax = exact_activation_qmax(weight_qmax)
        elif not (isinstance(activation_qmax, int) and 1 <= activation_qmax <= 127):
            raise ToolchainError(f"{where}: quantize.activation_qmax {activation_qmax!r} is not "
                                 f"auto or an integer in [1, 127]")
        return cls(alpha=alpha, outliers=int(settings.get("outlier_channels", 0)),
                   weight_qmax=weight_qmax, activation_qmax=activation_qmax,
                   target_cosine=float(settings.get("target_cosine", 0)),
                   padding_exact=bool(settings.get("padding_exact", True)),
                   compact_tokens=bool(settings.get("compact_tokens", True)),
                   keep_fp32=tuple(settings.get("keep_fp32", [])),
                   weight_rounding=rounding)

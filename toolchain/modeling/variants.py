"""The study's variants by name (Tang & Yang 2024): pooling head x attention mode."""

from __future__ import annotations

from toolchain.contract import Attention, Pooling, Variant
from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import POOLERS

__all__ = ["VARIANTS", "Variant", "register_variant", "resolve_variant"]

VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} registered twice")
    VARIANTS[variant.name] = variant
    return variant


CAUSAL, BIDIRECTIONAL = Attention.CAUSAL, Attention.BIDIRECTIONAL
register_variant(Variant("m1", Pooling.EOS_LAST, CAUSAL, "EOS-last-token pooling"))
register_variant(Variant("m2", Pooling.LAST_LAYER_TRAINABLE, CAUSAL,
                         "trainable pooling, last layer"))
register_variant(Variant("m3", Pooling.MULTI_LAYER_TRAINABLE, CAUSAL,
                         "trainable pooling, all layers"))
register_variant(Variant("m4", Pooling.LAST_LAYER_TRAINABLE, BIDIRECTIONAL,
                         "trainable pooling, last layer, bidirectional"))
register_variant(Variant("m5", Pooling.MULTI_LAYER_TRAINABLE, BIDIRECTIONAL,
                         "trainable pooling, all layers, bidirectional"))


def resolve_variant(name: str | Variant | None = None, pooling: str | None = None,
                    attention: str | None = None) -> Variant:
    """A Variant as given, a registered variant by name, or an explicit pooling x attention pair.

    Raises:
        ToolchainError: unknown name/pooling/attention, or both a name and a pair given.
    """
    if name is not None:
        if pooling is not None or attention is not None:
            raise ToolchainError("give a variant name or --pooling/--attention, not both")
        if isinstance(name, Variant):
            return name
        if name not in VARIANTS:
            raise ToolchainError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        return VARIANTS[name]
    if pooling is None or attention is None:
        raise ToolchainError("give a variant name (m1..m5) or both pooling and attention")
    if pooling not in POOLERS:
        raise ToolchainError(f"unknown pooling {pooling!r}; known: {', '.join(POOLERS)}")
    mode = Attention.parse(attention)
    for variant in VARIANTS.values():
        if (variant.pooling, variant.attention) == (pooling, mode):
            return variant
    return Variant(f"{pooling}+{mode}", pooling, mode, "explicit pair")

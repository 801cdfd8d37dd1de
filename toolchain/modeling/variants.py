"""The study's variants by name (Tang & Yang 2024): pooling head x attention mode."""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import POOLERS


@dataclass(frozen=True)
class Variant:
    name: str
    pooling: str
    attention: str  # "causal" | "bidirectional"
    description: str = ""


VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} registered twice")
    VARIANTS[variant.name] = variant
    return variant


register_variant(Variant("m1", "eos_last", "causal", "EOS-last-token pooling"))
register_variant(Variant("m2", "last_layer_trainable", "causal", "trainable pooling, last layer"))
register_variant(Variant("m3", "multi_layer_trainable", "causal", "trainable pooling, all layers"))
register_variant(Variant("m4", "last_layer_trainable", "bidirectional",
                         "trainable pooling, last layer, bidirectional"))
register_variant(Variant("m5", "multi_layer_trainable", "bidirectional",
                         "trainable pooling, all layers, bidirectional"))


def resolve_variant(name: str | None = None, pooling: str | None = None,
                    attention: str | None = None) -> Variant:
    """A registered variant by name, or an explicit pooling x attention pair.

    Raises:
        ToolchainError: unknown name/pooling/attention, or both a name and a pair given.
    """
    if name is not None:
        if pooling is not None or attention is not None:
            raise ToolchainError("give a variant name or --pooling/--attention, not both")
        if name not in VARIANTS:
            raise ToolchainError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        return VARIANTS[name]
    if pooling is None or attention is None:
        raise ToolchainError("give a variant name (m1..m5) or both pooling and attention")
    if pooling not in POOLERS:
        raise ToolchainError(f"unknown pooling {pooling!r}; known: {', '.join(POOLERS)}")
    if attention not in ("causal", "bidirectional"):
        raise ToolchainError(f"unknown attention {attention!r}; known: causal, bidirectional")
    for variant in VARIANTS.values():
        if (variant.pooling, variant.attention) == (pooling, attention):
            return variant
    return Variant(f"{pooling}+{attention}", pooling, attention, "explicit pair")

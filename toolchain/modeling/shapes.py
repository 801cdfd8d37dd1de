"""Named model shapes for analytic cost (no weights needed): reason about 7B from a CPU run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import HeadConfig, head_macs, head_parameter_count

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from toolchain.presets import Preset


@dataclass(frozen=True)
class ModelShape:
    """The architecture dimensions that cost and memory estimates need (no weights)."""

    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | PretrainedConfig) -> ModelShape:
        """The shape of a decoder config: a HF ``PretrainedConfig`` or its config.json as a dict.

        Raises:
            ToolchainError: a dimension is missing or not an integer.
        """
        def get(key: str) -> Any:
            return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)

        def dim(key: str) -> int:
            value = get(key)
            if value is None or isinstance(value, bool):
                raise ToolchainError(f"model config: {key} missing or not an integer")
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ToolchainError(f"model config: {key} must be an integer, "
                                     f"got {value!r}") from None

        heads = dim("num_attention_heads")
        # Multi-head attention configs omit num_key_value_heads (or set it to None).
        kv_heads = dim("num_key_value_heads") if get("num_key_value_heads") is not None else heads
        return cls(dim("hidden_size"), dim("num_hidden_layers"), dim("intermediate_size"), heads,
                   kv_heads, dim("vocab_size"))

    @classmethod
    def from_preset(cls, preset: Preset) -> ModelShape:
        """The preset's architecture dimensions, without loading weights.

        Order: a top-level ``shape:`` (a MODEL_SHAPES name or a mapping of ModelShape fields),
        the ``backbone.config`` of a config-built preset (vocab from its tokenizer), a
        MODEL_SHAPES entry named like the preset.

        Raises:
            ToolchainError: no way to know the shape, or a malformed ``shape:``.
        """
        where = f"{preset.path or preset.name}: shape"
        shape = preset.sections.get("shape")
        if isinstance(shape, str):
            try:
                return get_shape(shape)
            except ToolchainError as err:
                raise ToolchainError(f"{where}: {err}") from None
        if isinstance(shape, dict):
            try:
                return cls(**{k: int(v) for k, v in shape.items()})
            except (TypeError, ValueError) as err:
                raise ToolchainError(f"{where}: {err}") from None
        if shape is not None:
            raise ToolchainError(f"{where}: must be a shape name or a mapping")
        spec = preset.backbone
        if spec.source == "config":
            from transformers import AutoTokenizer

            from toolchain.assets import fetch_asset

            # the config's vocab_size may be absent or padded: the tokenizer's is what embeds
            tokenizer = AutoTokenizer.from_pretrained(str(fetch_asset(spec.tokenizer or "")))
            return cls.from_config({**spec.config, "vocab_size": len(tokenizer)})
        if preset.name in MODEL_SHAPES:
            return MODEL_SHAPES[preset.name]
        raise ToolchainError(f"{where}: preset {preset.name} needs a top-level `shape:` "
                             f"(one of {', '.join(MODEL_SHAPES)} or "
                             f"{'/'.join(f.name for f in fields(cls))})")


MODEL_SHAPES: dict[str, ModelShape] = {
    "mistral-7b": ModelShape(4096, 32, 14336, 32, 8, 32000),
    "qwen2-0.5b": ModelShape(896, 24, 4864, 14, 2, 151936),
    "smollm2-135m": ModelShape(576, 30, 1536, 9, 3, 49152),
}


def get_shape(name: str) -> ModelShape:
    if name not in MODEL_SHAPES:
        raise ToolchainError(f"unknown model shape {name!r}; known: {', '.join(MODEL_SHAPES)}")
    return MODEL_SHAPES[name]


def backbone_macs(shape: ModelShape, seq_len: int) -> int:
    """Multiply-accumulates of one text's forward through the decoder layers (no LM head)."""
    h, kv = shape.hidden_size, shape.hidden_size * shape.num_kv_heads // shape.num_heads
    projections = seq_len * (h * h + 2 * h * kv + h * h + 3 * h * shape.intermediate_size)
    attention = 2 * seq_len * seq_len * h
    return shape.num_layers * (projections + attention)


def head_cost_table(shape_name: str, seq_len: int, pooling: str, attention: str,
                    sizes: tuple[str, ...] = ("compact", "paper")) -> list[dict]:
    """Parameters and MACs per text of a head at a named shape, next to the backbone's MACs."""
    shape = get_shape(shape_name)
    backbone = backbone_macs(shape, seq_len)
    rows = []
    for size in sizes:
        config = HeadConfig.from_size(size, pooling=pooling, attention=attention,
                                      hidden_size=shape.hidden_size, num_layers=shape.num_layers)
        macs = head_macs(config, seq_len)
        rows.append({"shape": shape_name, "seq_len": seq_len, "pooling": pooling,
                     "attention": attention, "size": size,
                     "params": head_parameter_count(config), **macs,
                     "backbone_macs": backbone,
                     "per_text_vs_backbone": macs["per_text"] / backbone,
                     "total_vs_backbone": macs["total"] / backbone})
    return rows

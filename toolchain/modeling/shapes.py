"""Named model shapes for analytic cost (no weights needed): reason about 7B from a CPU run."""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import HeadConfig, head_macs, head_parameter_count


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int


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

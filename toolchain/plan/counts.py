"""What a training run is made of, counted without weights: parameters per part (base, LoRA,
head) from the architecture dimensions, and the tensors autograd saves per token (decoder layers,
calibrated) and per text (the head, counted on the meta device). Used by toolchain.plan.memory.
The shape itself comes from ``ModelShape.from_preset`` / ``ModelShape.from_config``."""

from __future__ import annotations

import torch

from toolchain.modeling.lora import LORA_TARGETS
from toolchain.modeling.pooling import HeadConfig, build_pooler
from toolchain.modeling.shapes import ModelShape

# Tensors autograd saves per token per decoder layer, in elements of the compute dtype (bf16
# counts its fp32 up-casts as two), for a Llama/Mistral/Qwen2 layer with peft LoRA on all 7
# projections and sdpa attention:  a*h + b*I + c*r + d*num_heads + f*seq_len + e  (the seq_len
# term is the layer's (B, 1, T, T) attention mask). Measured with saved_tensors_hooks
# (parameters excluded) on 9 shapes, transformers 5.24 / torch 2.13 CPU: the linear fit is exact
# (tests/test_plan.py re-measures a tenth shape). LoRA dropout adds a dropped copy of every
# projection input plus its mask (CPU stores the mask in the compute dtype; CUDA's fused dropout
# stores 1 byte, so on GPU this is an upper bound). Under gradient checkpointing (HF, per
# decoder layer) a layer keeps only its input: 1*h. The a*h term holds k and v repeated to h
# for grouped-query attention (2*h); a single KV head repeats as a view (2*kv instead).
ACTIVATION_ELEMENTS: dict[tuple[str, bool], tuple[int, int, int, int, int, int]] = {
    # (precision, lora dropout > 0): (a_h, b_I, c_r, d_heads, f_seq, e)
    ("fp32", True): (18, 5, 7, 1, 1, 2),
    ("fp32", False): (8, 4, 7, 1, 1, 2),
    ("bf16", True): (32, 7, 14, 2, 1, 4),
    ("bf16", False): (20, 5, 14, 2, 1, 4),
}


def kv_dim(shape: ModelShape) -> int:
    return shape.hidden_size // shape.num_heads * shape.num_kv_heads


def backbone_parameter_count(shape: ModelShape) -> int:
    """Base decoder (embedding, layers, final norm; no LM head, no q/k/v biases)."""
    h, kv, i = shape.hidden_size, kv_dim(shape), shape.intermediate_size
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return shape.vocab_size * h + shape.num_layers * layer + h


def projection_dims(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) features of each LoRA-targetable projection of one layer."""
    h, kv, i = shape.hidden_size, kv_dim(shape), shape.intermediate_size
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_parameter_count(shape: ModelShape, r: int, targets: list[str] | None = None) -> int:
    """A (r x in) + B (out x r) per targeted projection per layer."""
    dims = projection_dims(shape)
    return shape.num_layers * sum(r * sum(dims[t]) for t in (targets or LORA_TARGETS))


def meta_head(config: HeadConfig, dtype: torch.dtype) -> torch.nn.Module:
    with torch.device("meta"):
        return build_pooler(config).to(dtype)


def largest_module_parameters(module: torch.nn.Module) -> int:
    """Largest parameter set owned directly by one module (what ZeRO-3 gathers at once)."""
    return max((sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()),
               default=0)


def head_saved_bytes(config: HeadConfig, texts: int, seq_len: int, dtype: torch.dtype) -> list[int]:
    """Sizes of the tensors autograd saves inside the head for ``texts`` texts of ``seq_len``
    tokens, counted by running the real head on the meta device (inputs and parameters
    excluded, views of one storage counted once)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    head = meta_head(config, dtype)
    if not any(True for _ in head.parameters()):
        return []
    h = config.hidden_size
    with torch.device("meta"):
        layers = tuple(torch.empty(texts, seq_len, h, dtype=dtype, requires_grad=True)
                       for _ in range(config.num_layers + 1))
        mask = torch.ones(texts, seq_len, dtype=torch.long)
    skip = {StorageWeakRef(t.untyped_storage()).cdata for t in (*head.parameters(), *layers)}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = StorageWeakRef(tensor.untyped_storage()).cdata
        if key not in skip:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    features = {"token_embeddings": layers[-1], "attention_mask": mask,
                "all_layer_embeddings": layers}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        head(features)
    return list(saved.values())


def head_activation_bytes(config: HeadConfig, texts: int, seq_len: int, dtype: torch.dtype) -> int:
    """Total bytes of :func:`head_saved_bytes`."""
    return sum(head_saved_bytes(config, texts, seq_len, dtype))


def layer_activation_elements(shape: ModelShape, precision: str, lora_r: int, dropout: float,
                              seq_len: int) -> int:
    """Saved elements per token of one decoder layer (see ACTIVATION_ELEMENTS)."""
    a, b, c, d, f, e = ACTIVATION_ELEMENTS[(precision, dropout > 0)]
    elements = (a * shape.hidden_size + b * shape.intermediate_size + c * lora_r
                + d * shape.num_heads + f * seq_len + e)
    if shape.num_kv_heads == 1:  # repeat_kv of a single KV head is a view: k, v stay kv-sized
        elements -= 2 * (shape.hidden_size - kv_dim(shape))
    return elements

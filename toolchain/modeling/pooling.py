"""Pooling heads, one registry.

Contract (as sentence-transformers' Pooling): ``forward(features) -> features`` reads
``token_embeddings`` (B, T, H, last layer), ``attention_mask`` (B, T) and, for heads with
``needs_all_layers``, ``all_layer_embeddings`` (L + 1 tensors of (B, T, H), index 0 = embedding
output), and writes ``sentence_embedding`` (B, H). Normalisation is a separate step.

Register a head with ``@register_pooler("name")``; ``build_pooler(HeadConfig)`` builds it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.errors import ToolchainError

Attention = Literal["causal", "bidirectional"]

# Trainable-head sizes. "paper" is the reference PerceiverResampler (Mistral-7B: ~1.28 B params);
# "compact" keeps the head cheap next to the backbone (dim_head None -> hidden_size // num_heads).
HEAD_SIZES: dict[str, dict] = {
    "paper": {"n_latents": 768, "num_heads": 32, "dim_head": 2048, "ff_mult": 4},
    "compact": {"n_latents": 16, "num_heads": 8, "dim_head": None, "ff_mult": 1},
}


@dataclass
class HeadConfig:
    """Configuration of a pooling head. Dimensions come from the backbone's config."""

    pooling: str = field(metadata={"help": "registered pooler name, e.g. multi_layer_trainable"})
    hidden_size: int = field(metadata={"help": "backbone hidden size (= output dim)"})
    num_layers: int = field(metadata={"help": "backbone num_hidden_layers"})
    attention: Attention = field(default="causal", metadata={"help": "backbone attention mode"})
    n_latents: int = field(default=16, metadata={"help": "learned latent vectors"})
    num_heads: int = field(default=8, metadata={"help": "cross-attention heads"})
    dim_head: int | None = field(default=None, metadata={"help": "per-head dim; None: H // heads"})
    ff_mult: int = field(default=1, metadata={"help": "GEGLU feed-forward width multiple of H"})
    token_input: Literal["auto", "eos", "all"] = field(
        default="auto", metadata={"help": "last_layer_trainable keys: EOS only or all tokens; "
                                           "auto = eos under causal, all under bidirectional"})
    layer_summary: Literal["auto", "eos", "mean"] = field(
        default="auto", metadata={"help": "multi_layer_trainable per-layer summary; auto = eos "
                                           "under causal, masked mean under bidirectional"})

    def __post_init__(self) -> None:
        if self.pooling not in POOLERS:
            raise ToolchainError(f"unknown pooling {self.pooling!r}; known: {', '.join(POOLERS)}")
        if self.attention not in ("causal", "bidirectional"):
            raise ToolchainError(f"attention must be causal or bidirectional, got {self.attention!r}")
        for name in ("hidden_size", "num_layers", "n_latents", "num_heads", "ff_mult"):
            if int(getattr(self, name)) < 1:
                raise ToolchainError(f"head config field {name} must be >= 1")
        if self.dim_head is None:
            if self.hidden_size % self.num_heads:
                raise ToolchainError(f"hidden_size {self.hidden_size} not divisible by "
                                     f"num_heads {self.num_heads}; set dim_head")
            self.dim_head = self.hidden_size // self.num_heads
        causal = self.attention == "causal"
        if self.token_input == "auto":
            self.token_input = "eos" if causal else "all"
        if self.layer_summary == "auto":
            self.layer_summary = "eos" if causal else "mean"

    @classmethod
    def from_size(cls, size: str, **kwargs) -> "HeadConfig":
        """Build from a named size preset ("paper" or "compact") plus explicit fields."""
        if size not in HEAD_SIZES:
            raise ToolchainError(f"unknown head size {size!r}; known: {', '.join(HEAD_SIZES)}")
        return cls(**{**HEAD_SIZES[size], **kwargs})

    @classmethod
    def from_dict(cls, data: dict, source: str = "head config") -> "HeadConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ToolchainError(f"{source}: unknown field(s) {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


POOLERS: dict[str, type[nn.Module]] = {}


def register_pooler(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a head to the registry; duplicate names are rejected."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in POOLERS:
            raise ValueError(f"pooler {name!r} registered twice")
        POOLERS[name] = cls
        cls.pooler_name = name
        return cls

    return wrap


def build_pooler(config: HeadConfig) -> nn.Module:
    return POOLERS[config.pooling](config)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, for left or right padding. (B,) int64."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.to(torch.int64) * positions).argmax(dim=1)


def gather_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, H): the EOS state (the toolchain always puts EOS last)."""
    index = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, H), mean over real tokens only."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@register_pooler("eos_last")
class EosLastPooling(nn.Module):
    """m1: last-layer state of the EOS (last real) token. No parameters."""

    needs_all_layers = False

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, features: dict) -> dict:
        pooled = gather_last_token(features["token_embeddings"], features["attention_mask"])
        return {**features, "sentence_embedding": pooled}


@register_pooler("mean")
class MeanPooling(nn.Module):
    """Masked mean of the last layer over real tokens. No parameters."""

    needs_all_layers = False

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, features: dict) -> dict:
        pooled = masked_mean(features["token_embeddings"], features["attention_mask"])
        return {**features, "sentence_embedding": pooled}


class GEGLUFeedForward(nn.Module):
    """Pre-norm LayerNorm -> Linear(H, 2mH) -> x * gelu(gate) -> Linear(mH, H)."""

    def __init__(self, hidden_size: int, mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.proj_in = nn.Linear(hidden_size, 2 * mult * hidden_size, bias=False)
        self.proj_out = nn.Linear(mult * hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(value * F.gelu(gate))


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_mask: torch.Tensor | None) -> torch.Tensor:
    """q (B|1, nh, Q, d), k/v (B, nh, K, d), key_mask (B, K) of 1 = attend -> (B, nh, Q, d).

    Explicit matmul with an additive float mask: exports cleanly and masks padded keys."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, Q, K)
    if key_mask is not None:
        keep = key_mask.to(torch.bool)[:, None, None, :]
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.matmul(scores.softmax(dim=-1), v)


class LatentCrossAttention(nn.Module):
    """Reference "PerceiverResampler" block: learned latents query the inputs.

    latents (n, H) -> LayerNorm -> q; inputs -> LayerNorm -> k, v; SDPA (no dropout); out proj
    + residual onto latents; GEGLU feed-forward + residual; mean over latents -> (B, H).
    ``latent_queries()`` does not depend on the input (export stores it as a constant).
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        hidden, heads, dim_head = config.hidden_size, config.num_heads, config.dim_head
        inner = heads * dim_head
        self.num_heads, self.dim_head = heads, dim_head
        self.latents = nn.Parameter(torch.randn(config.n_latents, hidden))
        self.norm_inputs = nn.LayerNorm(hidden)
        self.norm_latents = nn.LayerNorm(hidden)
        self.to_q = nn.Linear(hidden, inner, bias=False)
        self.to_kv = nn.Linear(hidden, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, hidden, bias=False)
        self.ff = GEGLUFeedForward(hidden, config.ff_mult)

    def latent_queries(self) -> torch.Tensor:
        """(1, nh, n, d): the query projection of the normalised latents."""
        q = self.to_q(self.norm_latents(self.latents))  # (n, nh*d)
        return q.view(1, -1, self.num_heads, self.dim_head).transpose(1, 2)

    def forward(self, inputs: torch.Tensor, key_mask: torch.Tensor | None = None,
                queries: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = inputs.shape
        k, v = self.to_kv(self.norm_inputs(inputs)).chunk(2, dim=-1)  # (B, K, nh*d) each
        k = k.view(batch, length, self.num_heads, self.dim_head).transpose(1, 2)  # (B, nh, K, d)
        v = v.view(batch, length, self.num_heads, self.dim_head).transpose(1, 2)
        q = self.latent_queries() if queries is None else queries  # (1, nh, n, d)
        attended = multihead_attention(q, k, v, key_mask)  # (B, nh, n, d)
        attended = attended.transpose(1, 2).reshape(batch, -1, self.num_heads * self.dim_head)
        latents = self.latents.unsqueeze(0) + self.to_out(attended)  # (B, n, H)
        latents = latents + self.ff(latents)
        return latents.mean(dim=1)  # (B, H)


@register_pooler("last_layer_trainable")
class LastLayerTrainablePooling(nn.Module):
    """m2 / m4: latents cross-attend to the last layer.

    token_input "eos": the EOS state only, (B, 1, H) (m2, causal). "all": every token with padded
    keys masked (m4, bidirectional; the reference forgot the mask).
    """

    needs_all_layers = False

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.block = LatentCrossAttention(config)

    def forward(self, features: dict) -> dict:
        hidden, mask = features["token_embeddings"], features["attention_mask"]
        if self.config.token_input == "eos":
            inputs, key_mask = gather_last_token(hidden, mask).unsqueeze(1), None  # (B, 1, H)
        else:
            inputs, key_mask = hidden, mask  # (B, T, H)
        pooled = self.block(inputs, key_mask, features.get("latent_queries"))
        return {**features, "sentence_embedding": pooled}


@register_pooler("multi_layer_trainable")
class MultiLayerTrainablePooling(nn.Module):
    """m3 / m5: one summary per layer 1..L (EOS state or masked mean), plus a learned per-layer
    embedding (added, N(0, 1) init as the reference), then latents cross-attend to the L rows."""

    needs_all_layers = True

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.layer_embedding = nn.Embedding(config.num_layers, config.hidden_size)
        self.block = LatentCrossAttention(config)

    def layer_summaries(self, features: dict) -> torch.Tensor:
        """(B, L, H) from the L transformer layers (the embedding output is excluded)."""
        mask = features["attention_mask"]
        summarise = gather_last_token if self.config.layer_summary == "eos" else masked_mean
        layers = features["all_layer_embeddings"][1:]
        if len(layers) != self.config.num_layers:
            raise ToolchainError(f"head expects {self.config.num_layers} layers, got {len(layers)}")
        return torch.stack([summarise(h, mask) for h in layers], dim=1)

    def forward(self, features: dict) -> dict:
        inputs = self.layer_summaries(features) + self.layer_embedding.weight.unsqueeze(0)
        pooled = self.block(inputs, None, features.get("latent_queries"))
        return {**features, "sentence_embedding": pooled}


@register_pooler("latent_attention")
class LatentAttentionPooling(nn.Module):
    """NV-Embed style baseline: the tokens query learned latents (keys = values = latents), a GELU
    MLP with residual, then the masked mean over tokens."""

    needs_all_layers = False

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        hidden, heads, dim_head = config.hidden_size, config.num_heads, config.dim_head
        inner = heads * dim_head
        self.config, self.num_heads, self.dim_head = config, heads, dim_head
        self.latents = nn.Parameter(torch.randn(config.n_latents, hidden))
        self.to_q = nn.Linear(hidden, inner, bias=False)
        self.to_kv = nn.Linear(hidden, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, config.ff_mult * hidden), nn.GELU(),
                                 nn.Linear(config.ff_mult * hidden, hidden))

    def forward(self, features: dict) -> dict:
        hidden, mask = features["token_embeddings"], features["attention_mask"]
        batch, length, _ = hidden.shape
        q = self.to_q(hidden).view(batch, length, self.num_heads, self.dim_head).transpose(1, 2)
        k, v = self.to_kv(self.latents).chunk(2, dim=-1)  # (n, nh*d): input-independent
        k = k.view(1, -1, self.num_heads, self.dim_head).transpose(1, 2)  # (1, nh, n, d)
        v = v.view(1, -1, self.num_heads, self.dim_head).transpose(1, 2)
        attended = multihead_attention(q, k.expand(batch, -1, -1, -1),
                                       v.expand(batch, -1, -1, -1), None)  # (B, nh, T, d)
        out = self.to_out(attended.transpose(1, 2).reshape(batch, length, -1))  # (B, T, H)
        out = out + self.mlp(out)
        return {**features, "sentence_embedding": masked_mean(out, mask)}


def head_macs(config: HeadConfig, seq_len: int) -> dict[str, int]:
    """Analytic multiply-accumulates per text of a head at sequence length ``seq_len``.

    Returns ``{"total", "input_independent", "per_text"}``; ``per_text`` = total minus the work
    an export can precompute once (latent query projection, or latent K/V for latent_attention).
    """
    hidden, inner, n = config.hidden_size, config.num_heads * config.dim_head, config.n_latents
    ff = 3 * config.ff_mult * hidden * hidden  # GEGLU: H -> 2mH, mH -> H
    if config.pooling in ("eos_last", "mean"):
        total, fixed = 0, 0
    elif config.pooling == "latent_attention":
        fixed = n * hidden * 2 * inner
        mlp = 2 * config.ff_mult * hidden * hidden
        total = fixed + seq_len * (hidden * inner + 2 * n * inner + inner * hidden + mlp)
    else:
        if config.pooling == "multi_layer_trainable":
            keys = config.num_layers
        else:
            keys = 1 if config.token_input == "eos" else seq_len
        fixed = n * hidden * inner
        total = fixed + keys * hidden * 2 * inner + 2 * n * keys * inner + n * (inner * hidden + ff)
    return {"total": total, "input_independent": fixed, "per_text": total - fixed}


def head_parameter_count(config: HeadConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_pooler(config).parameters())

"""An NV-Embed style head (tokens query learned latents), registered beside the study's heads."""

from __future__ import annotations

import torch
from torch import nn

from toolchain.contract import Pooling
from toolchain.modeling.latent_blocks import multihead_attention
from toolchain.modeling.pooling import (HeadConfig, MacCounts, PoolingHead, mac_counts,
                                        masked_mean, register_pooler)


@register_pooler(Pooling.LATENT_ATTENTION)
class LatentAttentionPooling(PoolingHead):
    """NV-Embed style baseline: the tokens query learned latents (keys = values = latents), a GELU
    MLP with residual, then the masked mean over tokens."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        hidden, heads, dim_head = config.hidden_size, config.num_heads, config.dim_head
        inner = heads * dim_head
        self.num_heads, self.dim_head = heads, dim_head
        self.latents = nn.Parameter(torch.randn(config.n_latents, hidden))
        self.to_q = nn.Linear(hidden, inner, bias=False)
        self.to_kv = nn.Linear(hidden, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, config.ff_mult * hidden), nn.GELU(),
                                 nn.Linear(config.ff_mult * hidden, hidden))

    @classmethod
    def macs(cls, config: HeadConfig, seq_len: int) -> MacCounts:
        # the latent K/V projection is input-independent (not stored by the export today)
        hidden, inner, n = config.hidden_size, config.num_heads * config.dim_head, config.n_latents
        fixed = n * hidden * 2 * inner
        mlp = 2 * config.ff_mult * hidden * hidden
        return mac_counts(fixed + seq_len * (hidden * inner + 2 * n * inner + inner * hidden + mlp),
                          fixed)

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

"""The trainable heads of the study (m2-m5): learned latents cross-attend to the last layer or
to one summary per layer (the reference "PerceiverResampler"), optionally gated onto the
parameter-free pooling they replace."""

from __future__ import annotations

import torch
from torch import nn

from toolchain.contract import Pooling
from toolchain.errors import ToolchainError
from toolchain.modeling.latent_blocks import LatentCrossAttention
from toolchain.modeling.pooling import (HeadConfig, MacCounts, PoolingHead, gather_last_token,
                                        mac_counts, masked_mean, register_pooler)


def unit_rms(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to root-mean-square 1 (a pass-through's scale must not depend on the
    backbone's activation scale, which differs by orders of magnitude between models)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True).clamp(min=1e-12))


class LatentQueryPooling(PoolingHead):
    """A head whose latents cross-attend to ``keys(config, seq_len)`` input rows (one
    LatentCrossAttention block); its latent queries do not depend on the input.

    With ``pass_through_gate`` the output is ``unit_rms(pass_through(features)) + tanh(g) x
    block output``, g a learned scalar at 0: the head starts as the parameter-free pooling it
    replaces and learns how much to add to it.
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        self.block = LatentCrossAttention(config)
        if config.pass_through_gate:
            self.gate = nn.Parameter(torch.zeros(()))

    def pass_through(self, features: dict) -> torch.Tensor:
        """(B, H): the parameter-free pooling of the last layer this head stands in for."""
        raise NotImplementedError

    def output(self, features: dict, pooled: torch.Tensor) -> dict:
        if self.config.pass_through_gate:
            pooled = unit_rms(self.pass_through(features)) + torch.tanh(self.gate) * pooled
        return {**features, "sentence_embedding": pooled}

    @classmethod
    def keys(cls, config: HeadConfig, seq_len: int) -> int:
        raise NotImplementedError

    @classmethod
    def macs(cls, config: HeadConfig, seq_len: int) -> MacCounts:
        hidden, inner, n = config.hidden_size, config.num_heads * config.dim_head, config.n_latents
        keys = cls.keys(config, seq_len)
        ff = 3 * config.ff_mult * hidden * hidden  # GEGLU: H -> 2mH, mH -> H
        fixed = n * hidden * inner  # the latent query projection
        return mac_counts(fixed + keys * hidden * 2 * inner + 2 * n * keys * inner
                          + n * (inner * hidden + ff), fixed)

    @torch.no_grad()
    def precomputable_queries(self) -> torch.Tensor:
        """(1, nh, n, d): to_q(norm_latents(latents)), stored by the export as a constant."""
        return self.block.latent_queries().detach().clone().contiguous()


@register_pooler(Pooling.LAST_LAYER_TRAINABLE)
class LastLayerTrainablePooling(LatentQueryPooling):
    """m2 / m4: latents cross-attend to the last layer.

    token_input "eos": the EOS state only, (B, 1, H) (m2, causal). "all": every token with padded
    keys masked (m4, bidirectional; the reference forgot the mask).
    """

    @classmethod
    def keys(cls, config: HeadConfig, seq_len: int) -> int:
        return 1 if config.token_input == "eos" else seq_len

    def forward(self, features: dict) -> dict:
        hidden, mask = features["token_embeddings"], features["attention_mask"]
        if self.config.token_input == "eos":
            inputs, key_mask = gather_last_token(hidden, mask).unsqueeze(1), None  # (B, 1, H)
        else:
            inputs, key_mask = hidden, mask  # (B, T, H)
        pooled = self.block(inputs, key_mask, features.get("latent_queries"))
        return self.output(features, pooled)

    def pass_through(self, features: dict) -> torch.Tensor:
        reduce = gather_last_token if self.config.token_input == "eos" else masked_mean
        return reduce(features["token_embeddings"], features["attention_mask"])


@register_pooler(Pooling.MULTI_LAYER_TRAINABLE)
class MultiLayerTrainablePooling(LatentQueryPooling):
    """m3 / m5: one summary per layer 1..L (EOS state or masked mean), plus a learned per-layer
    embedding (added; N(0, ``layer_embedding_init_std``**2) init, zero by default: the
    reference's N(0, 1) swamps layers whose states have RMS ~1), then latents cross-attend to
    the L rows."""

    needs_all_layers = True

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        self.layer_embedding = nn.Embedding(config.num_layers, config.hidden_size)
        with torch.no_grad():  # same draws as the reference's init, scaled
            self.layer_embedding.weight.mul_(config.layer_embedding_init_std)

    @classmethod
    def keys(cls, config: HeadConfig, seq_len: int) -> int:
        return config.num_layers

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
        return self.output(features, pooled)

    def pass_through(self, features: dict) -> torch.Tensor:
        reduce = gather_last_token if self.config.layer_summary == "eos" else masked_mean
        return reduce(features["token_embeddings"], features["attention_mask"])

"""Cost split: backbone alone vs pooling head alone, and analytic FLOPs at named model shapes.

Method (measured, PyTorch eager, same threads as the rest of the run): for each shape the
backbone forward (``EmbeddingModel.features``: decoder layers, plus all hidden states when the
head needs them) is timed; its output features are then cached and the head (+ L2 normalise) is
timed alone on them, next to an ``eos_last`` head (m1's pooling) on the same features. The head's
added cost over eos_last is ``head_ms - eos_last_ms``, and its share ``added / backbone_ms``.
Timing the head on cached features needs no export and isolates it from backbone noise.

Analytic: multiply-accumulates per text from ``toolchain.modeling.shapes`` / ``head_macs``, so a
review can reason about a 7B backbone from CPU runs. FLOPs = 2 x MACs.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from toolchain.bench.latency import percentiles, shape_key, time_callable
from toolchain.modeling.pooling import HeadConfig, build_pooler, head_macs
from toolchain.modeling.shapes import ModelShape, backbone_macs, head_cost_table

DEFAULT_SHAPES = ("mistral-7b", "qwen2-0.5b")
HEAD_MIN_REPEATS = 25


def model_macs_per_text(model, seq_len: int) -> dict[str, int]:
    """Analytic MACs of one text through ``model`` (an EmbeddingModel): backbone, head, total."""
    backbone = backbone_macs(ModelShape.from_config(model.backbone.config), seq_len)
    head = head_macs(model.head_config, seq_len)["total"]
    return {"backbone": backbone, "head": head, "total": backbone + head}


def _inputs(model, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random non-special token ids (EOS last), no padding: the same shape the runners see."""
    gen = torch.Generator().manual_seed(0)
    vocab = model.backbone.config.vocab_size
    ids = torch.randint(3, vocab, (batch, seq_len), generator=gen)
    ids[:, -1] = model.tokenizer.eos_token_id
    return ids, torch.ones_like(ids)


def _pooled(head, features: dict) -> torch.Tensor:
    return F.normalize(head(features)["sentence_embedding"].float(), dim=-1)


def eos_last_head(hidden_size: int, num_layers: int):
    """m1's pooling (no parameters): the reference every head's added cost is measured against."""
    return build_pooler(HeadConfig(pooling="eos_last", hidden_size=hidden_size,
                                   num_layers=num_layers))


@torch.no_grad()
def time_head(head, features: dict, warmup: int = 2, repeats: int = 10,
              max_seconds: float | None = None) -> dict[str, float]:
    """Percentiles (ms) of ``head`` + L2 normalise alone on cached backbone ``features``."""
    return percentiles(time_callable(lambda: _pooled(head, features), warmup, repeats,
                                     max_seconds))


@torch.no_grad()
def cost_split(model, shapes: Sequence[tuple[int, int]], warmup: int = 2, repeats: int = 10,
               max_seconds: float | None = None, threads: int | None = None) -> list[dict]:
    """Time backbone alone and head alone (vs eos_last) for one EmbeddingModel.

    Args:
        model: a ``toolchain.modeling.EmbeddingModel`` (e.g. loaded from a merged directory).
        shapes: (batch, seq_len) pairs.
        threads: torch intra-op threads for the measurement (None: leave as is).

    Returns:
        One row per shape: backbone/head/eos_last p50 and p95 ms, added ms and % over eos_last,
        and the analytic MACs per text of backbone and head at the model's own shape.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    model.eval()
    eos_head = eos_last_head(model.head_config.hidden_size, model.head_config.num_layers)
    rows = []
    try:
        for batch, seq_len in shapes:
            ids, mask = _inputs(model, batch, seq_len)
            backbone = percentiles(time_callable(lambda: model.features(ids, mask), warmup,
                                                 repeats, max_seconds))
            features = model.features(ids, mask)  # cached: the head is timed on these alone
            # heads take about a millisecond: extra repeats are cheap and keep a few
            # scheduler stalls on a shared machine from moving the median
            head_repeats = max(repeats, HEAD_MIN_REPEATS)
            head = time_head(model.head, features, warmup, head_repeats, max_seconds)
            eos = time_head(eos_head, features, warmup, head_repeats, max_seconds)
            added = head["p50_ms"] - eos["p50_ms"]
            macs = model_macs_per_text(model, seq_len)
            rows.append({
                "variant": model.variant.name, "pooling": model.variant.pooling,
                "attention": model.variant.attention, "threads": torch.get_num_threads(),
                "shape": shape_key(batch, seq_len), "batch": batch, "seq_len": seq_len,
                "backbone_p50_ms": backbone["p50_ms"], "backbone_p95_ms": backbone["p95_ms"],
                "head_p50_ms": head["p50_ms"], "head_p95_ms": head["p95_ms"],
                "eos_last_p50_ms": eos["p50_ms"], "added_ms": added,
                "added_pct": 100.0 * added / backbone["p50_ms"],
                "backbone_macs_per_text": macs["backbone"], "head_macs_per_text": macs["head"],
                "analytic_head_pct": 100.0 * macs["head"] / macs["backbone"],
                "method": "torch eager; head timed alone on cached backbone features"})
    finally:
        torch.set_num_threads(previous)
    return rows


def analytic_table(variants: Sequence, shapes: Sequence[str] = DEFAULT_SHAPES,
                   seq_lens: Sequence[int] = (32, 128, 512),
                   sizes: Sequence[str] = ("compact", "paper")) -> list[dict]:
    """Head MACs/FLOPs per text and % of the backbone for each variant at named model shapes.

    Args:
        variants: ``toolchain.modeling.Variant`` objects (name, pooling, attention).
        shapes: names in ``toolchain.modeling.shapes.MODEL_SHAPES``.
    """
    rows = []
    for variant in variants:
        for shape in shapes:
            for seq_len in seq_lens:
                for row in head_cost_table(shape, seq_len, variant.pooling, variant.attention,
                                           tuple(sizes)):
                    rows.append({"variant": variant.name, **row,
                                 "head_gflop_per_text": 2 * row["per_text"] / 1e9,
                                 "backbone_gflop_per_text": 2 * row["backbone_macs"] / 1e9,
                                 "head_pct": 100.0 * row["per_text_vs_backbone"]})
    return rows

"""Parity helpers shared by the stages that must prove two models embed alike (merge: adapter
vs merged weights; export: ONNX graph vs PyTorch model)."""

from __future__ import annotations

import numpy as np


def compare(candidate: np.ndarray, reference: np.ndarray) -> dict:
    """Max |diff| and the minimum per-row cosine of two (N, H) arrays. Two all-zero rows
    agree (cosine 1), a zero row against a non-zero one does not (0): a random backbone whose
    EOS embedding row is zero (pad = EOS, ``padding_idx``) embeds the empty text as exactly
    zero on every path."""
    a, b = candidate.astype(np.float64), reference.astype(np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    both_zero = ~a.any(-1) & ~b.any(-1)
    cos = np.where(norms > 0, (a * b).sum(-1) / np.maximum(norms, 1e-300), both_zero * 1.0)
    return {"max_abs": float(np.abs(a - b).max()), "min_cosine": float(cos.min())}


def random_batch(rng: np.random.Generator, batch: int, length: int, vocab: int, pad_id: int,
                 side: str) -> tuple[np.ndarray, np.ndarray]:
    """Random ids, row 0 full length, others random lengths, padded on ``side``."""
    ids = np.full((batch, length), pad_id, dtype=np.int64)
    mask = np.zeros((batch, length), dtype=np.int64)
    for row in range(batch):
        n = length if row == 0 else int(rng.integers(1, length + 1))
        span = slice(length - n, length) if side == "left" else slice(0, n)
        ids[row, span] = rng.integers(3, vocab, n)
        mask[row, span] = 1
    return ids, mask


def repad(ids: np.ndarray, mask: np.ndarray, side: str, extra: int, pad_id: int):
    """Re-pad a batch on ``side`` with ``extra`` more columns of padding."""
    width = ids.shape[1] + extra
    out_ids = np.full((ids.shape[0], width), pad_id, dtype=np.int64)
    out_mask = np.zeros_like(out_ids)
    for row in range(ids.shape[0]):
        real = ids[row][mask[row].astype(bool)]
        span = slice(width - len(real), width) if side == "left" else slice(0, len(real))
        out_ids[row, span], out_mask[row, span] = real, 1
    return out_ids, out_mask

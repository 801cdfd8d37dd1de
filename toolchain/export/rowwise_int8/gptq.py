"""Rounding of the packed weights to int8 codes with one scale per output column: to nearest,
or GPTQ's (Frantar et al. 2023) error-spreading rounding over the calibration rows' X^T X."""

from __future__ import annotations

import numpy as np


def quantise_columns(packed: np.ndarray, weight_qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, fp32 scale per output column) with codes in [-weight_qmax, weight_qmax]."""
    column_scale = np.abs(packed).max(0) / weight_qmax
    column_scale[column_scale == 0] = 1.0
    quant = np.clip(np.round(packed / column_scale), -weight_qmax, weight_qmax).astype(np.int8)
    return quant, column_scale.astype(np.float32)


def gptq_columns(packed: np.ndarray, gram: np.ndarray, weight_qmax: int, damp: float = 0.01,
                 block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantise_columns` with GPTQ's rounding (Frantar et al. 2023): the input channels
    (rows of ``packed``) are rounded one at a time, largest X^T X diagonal first, and each one's
    rounding error is spread over the rows not yet rounded so that x @ W moves least on the
    inputs ``gram`` (X^T X) was measured on. Rows that are all zero (outlier channels) stay
    zero; rows of channels the calibration never excites are rounded to nearest. ``damp`` adds
    that share of the mean diagonal, for channels the calibration rarely excites."""
    quant, column_scale = quantise_columns(packed, weight_qmax)
    live = np.flatnonzero(np.any(packed != 0, axis=1) & (np.diag(gram) > 0))
    live = live[np.argsort(-np.diag(gram)[live], kind="stable")]
    hessian = gram[np.ix_(live, live)].astype(np.float64)
    hessian[np.diag_indices_from(hessian)] += damp * np.mean(np.diag(hessian))
    # the upper Cholesky factor of H^-1: row i holds how row i's error moves the rows after it
    inverse = np.linalg.cholesky(np.linalg.inv(hessian)).T
    weights = packed[live].astype(np.float64)
    scale = column_scale.astype(np.float64)
    codes = np.zeros(weights.shape, np.float64)
    for start in range(0, len(live), block):
        stop = min(start + block, len(live))
        errors = np.zeros((stop - start, weights.shape[1]))
        for i in range(start, stop):
            codes[i] = np.clip(np.round(weights[i] / scale), -weight_qmax, weight_qmax)
            errors[i - start] = (weights[i] - codes[i] * scale) / inverse[i, i]
            weights[i + 1:stop] -= np.outer(inverse[i, i + 1:stop], errors[i - start])
        weights[stop:] -= inverse[start:stop, stop:].T @ errors
    quant[live] = codes.astype(np.int8)
    return quant, column_scale

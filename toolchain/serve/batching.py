"""Grouping by length: the texts of one engine batch are cut into forward passes whose padded
size (rows x longest row) stays within a token budget, shortest texts together, so a short text
never pays for a long one's padding."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from toolchain.errors import ToolchainError


def token_groups(lengths: Sequence[int], token_budget: int, max_rows: int) -> list[list[int]]:
    """Indices of ``lengths`` in forward-pass groups: sorted by length, each group's
    ``len(group) * max(length)`` <= ``token_budget`` (a text longer than the budget goes alone)
    and at most ``max_rows`` rows.

    Raises:
        ToolchainError: a budget or row limit below 1.
    """
    if token_budget < 1 or max_rows < 1:
        raise ToolchainError(f"token_budget and max_rows must be >= 1, got {token_budget}, "
                             f"{max_rows}")
    groups: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # sorted ascending: the newcomer is the group's longest row
        rows = len(current) + 1
        if current and (rows > max_rows or rows * lengths[index] > token_budget):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def trim_to_rows(input_ids: np.ndarray, attention_mask: np.ndarray,
                 rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The given rows of a padded batch, with the columns no chosen row uses dropped: the same
    arrays as tokenising those texts alone (left or right padding alike)."""
    mask = attention_mask[list(rows)]
    used = mask.any(axis=0)
    return input_ids[list(rows)][:, used], mask[:, used]

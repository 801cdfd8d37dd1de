"""Deterministic contrastive batches: the batch of micro-step ``i`` is a pure function of
(rows, seed, i), so a resumed run sees exactly the data the uninterrupted run saw.

Order: one seeded permutation of the rows per epoch; the global batch of micro-step ``i`` is
positions ``[i*B, (i+1)*B)`` of the concatenated epochs, and rank ``r`` takes the ``r``-th
contiguous slice. Each query gets ``k`` negatives: its own hard negatives first (rotated by
epoch so rows with many negatives vary), topped up with positives of random other rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from toolchain.data.training import TrainingRow
from toolchain.errors import ToolchainError


@dataclass
class Batch:
    """One rank's share of a contrastive batch (instructions already applied to queries)."""

    queries: list[str]
    positives: list[str]
    negatives: list[str]  # k per query, query-major

    def texts(self) -> list[str]:
        """Everything the model embeds, in the order the loss splits it: queries, positives,
        negatives."""
        return self.queries + self.positives + self.negatives


class BatchPlan:
    """Which rows each rank trains on at each micro-step.

    Args:
        rows: validated training rows.
        batch_size: queries per contrastive batch across all ranks.
        negatives_per_query: k.
        seed: data-order seed.
        rank, world_size: this process's place.

    Raises:
        ToolchainError: batch not divisible by the world size, or more queries than rows.
    """

    def __init__(self, rows: Sequence[TrainingRow], batch_size: int, negatives_per_query: int,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ToolchainError(f"batch_size {batch_size} is not divisible by the {world_size} "
                                 f"processes")
        if batch_size > len(rows) or len(rows) < 2:
            raise ToolchainError(f"batch_size {batch_size} exceeds the {len(rows)} training rows")
        self.rows, self.batch_size, self.k = list(rows), batch_size, negatives_per_query
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.local = batch_size // world_size
        self._order = lru_cache(maxsize=4)(self._permutation)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.rows), generator=gen).tolist()

    def global_indices(self, micro_step: int) -> list[int]:
        """Row indices of the whole contrastive batch of ``micro_step`` (all ranks)."""
        n, out = len(self.rows), []
        for position in range(micro_step * self.batch_size, (micro_step + 1) * self.batch_size):
            out.append(self._order(position // n)[position % n])
        return out

    def batch(self, micro_step: int) -> Batch:
        """This rank's queries, positives and k negatives per query at ``micro_step``."""
        indices = self.global_indices(micro_step)
        mine = indices[self.rank * self.local:(self.rank + 1) * self.local]
        epoch = micro_step * self.batch_size // len(self.rows)
        gen = torch.Generator().manual_seed(self.seed * 7_919 + micro_step)
        negatives = []
        for index in mine:
            negatives += self._negatives(index, epoch, gen)
        return Batch([self.rows[i].formatted_query() for i in mine],
                     [self.rows[i].positive for i in mine], negatives)

    def _negatives(self, index: int, epoch: int, gen: torch.Generator) -> list[str]:
        own = self.rows[index].negatives
        picked = [own[(epoch + j) % len(own)] for j in range(min(self.k, len(own)))]
        tries = 0
        while len(picked) < self.k:  # top up with another row's positive (a random negative)
            other = int(torch.randint(len(self.rows), (1,), generator=gen))
            tries += 1
            if other != index and (tries > 64 or self.rows[other].positive != self.rows[index].positive):
                picked.append(self.rows[other].positive)
        return picked

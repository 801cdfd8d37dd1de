"""Length-grouped forward passes: a step's texts sorted by length and cut into padded chunks.

A contrastive step embeds short queries next to long passages; padded to the longest text, 42 %
of the study step's positions were padding. Grouping keeps the batch itself (its queries,
positives and negatives, hence the loss) unchanged: only how its texts are cut into forward
passes changes, and a text's embedding does not depend on its padding. The chunks' embeddings go
back to the batch's order before the loss (``StepChunks.restore``).

Chunk shapes are kept few on purpose: every chunk has the same number of rows and its width is
rounded up to a multiple of ``WIDTH_MULTIPLE``. oneDNN builds a kernel for each new GEMM shape,
and cutting by padding alone (every chunk a new shape) made the bf16 step slower than no grouping
at all (measured: benchmarks/results/train_step.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from toolchain.tokenization import TextTokenizer

WIDTH_MULTIPLE = 8


@dataclass
class StepChunks:
    """A step's texts as padded chunks, and the way back to the batch's order."""

    chunks: list[dict[str, torch.Tensor]]
    order: list[int]  # batch index of each row of the concatenated chunks

    @property
    def real_tokens(self) -> int:
        return sum(int(c["attention_mask"].sum()) for c in self.chunks)

    @property
    def positions(self) -> int:
        """Positions the forward passes compute (real tokens + padding)."""
        return sum(c["attention_mask"].numel() for c in self.chunks)

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.positions

    def restore(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows in chunk order (concatenated chunks) -> rows in the batch's text order."""
        inverse = torch.empty(len(self.order), dtype=torch.long)
        inverse[torch.tensor(self.order, dtype=torch.long)] = torch.arange(len(self.order))
        return rows[inverse.to(rows.device)]


def step_chunks(tokenizer: TextTokenizer, texts: Sequence[str], rows_per_chunk: int | None,
                group_by_length: bool = True) -> StepChunks:
    """Tokenise a step's texts into padded chunks of ``rows_per_chunk`` texts (the last may be
    smaller; None = one chunk).

    With ``group_by_length`` the texts are sorted by token count first and each chunk's width is
    rounded up to a multiple of ``WIDTH_MULTIPLE`` (at most the tokenizer's max_length);
    without it the texts stay in batch order, each chunk padded to its longest text.
    """
    rows = [tokenizer.token_ids(text, i) for i, text in enumerate(texts)]
    order = list(range(len(rows)))
    if group_by_length:
        order.sort(key=lambda i: (len(rows[i]), i))
    size = rows_per_chunk or len(order)
    groups = [order[i:i + size] for i in range(0, len(order), size)]
    chunks = []
    for group in groups:
        longest = max(len(rows[i]) for i in group)  # <= max_length, so rounding never cuts
        width = (min(-(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, tokenizer.max_length)
                 if group_by_length else None)
        chunks.append(tokenizer.pad([rows[i] for i in group], width=width))
    return StepChunks(chunks, [i for g in groups for i in g])

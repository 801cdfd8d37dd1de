"""The EOS and padding contract shared by training, export and serving.

Every text becomes [BOS?] content... EOS: the toolchain appends EOS itself (transformers 5 stopped
doing so for some tokenizers), truncation cuts content and keeps the EOS, padding goes left or
right (the pooling code handles both).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from toolchain.errors import ToolchainError

PaddingSide = Literal["left", "right"]
# An empty (or whitespace-only) text embeds as the contract's EOS-only sequence ([BOS] EOS), as
# sentence-transformers embeds "" ([CLS] [SEP]); "refuse" makes it an error instead.
EmptyTexts = Literal["embed", "refuse"]


def check_empty_policy(empty_texts: str) -> EmptyTexts:
    if empty_texts not in ("embed", "refuse"):
        raise ToolchainError(f"empty_texts must be embed or refuse, got {empty_texts!r}")
    return empty_texts


def check_texts(texts: Sequence[str], empty_texts: EmptyTexts = "embed") -> None:
    """The contract's checks on a batch of texts, before anything is tokenised or sorted.

    Raises:
        ToolchainError: a single string instead of a list, an empty list, an element that is not
        a string (its index and type named), or an empty text under ``empty_texts="refuse"``.
    """
    if isinstance(texts, str):
        raise ToolchainError("expected a list of texts, got a single string")
    check_empty_policy(empty_texts)
    if len(texts) == 0:
        raise ToolchainError("empty text list: nothing to embed")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ToolchainError(f"text {index}: expected a string, got {type(text).__name__}")
        if empty_texts == "refuse" and not text.strip():
            raise ToolchainError(f"text {index} is empty (empty_texts='refuse')")


class TextTokenizer:
    """Wraps a HF tokenizer with the toolchain's contract.

    Args:
        tokenizer: a loaded HF tokenizer with an EOS token.
        max_length: maximum tokens per text, EOS included.
        padding_side: "left" or "right".
        empty_texts: "embed" (a text that tokenises to nothing becomes [BOS] EOS) or "refuse".
    """

    def __init__(self, tokenizer, max_length: int, padding_side: PaddingSide = "left",
                 empty_texts: EmptyTexts = "embed") -> None:
        if tokenizer.eos_token_id is None:
            raise ToolchainError("tokenizer has no EOS token; the pooling contract needs one")
        if padding_side not in ("left", "right"):
            raise ToolchainError(f"padding_side must be left or right, got {padding_side!r}")
        if max_length < 2:
            raise ToolchainError(f"max_length must be >= 2, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding_side = padding_side
        self.eos_token_id = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else self.eos_token_id
        self.pad_token_id = int(pad)
        self.bos_token_id = tokenizer.bos_token_id
        self.empty_texts = check_empty_policy(empty_texts)

    def token_ids(self, text: str, index: int = 0) -> list[int]:
        """Token ids of one text, EOS last, at most max_length long."""
        if not isinstance(text, str):
            raise ToolchainError(f"text {index}: expected a string, got {type(text).__name__}")
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        while ids and ids[-1] == self.eos_token_id:
            ids.pop()
        lead = 1 if ids and self.bos_token_id is not None and ids[0] == self.bos_token_id else 0
        if len(ids) - lead == 0 and self.empty_texts == "refuse":
            raise ToolchainError(f"text {index} ({text!r}) tokenises to nothing "
                                 "(empty_texts='refuse')")
        return ids[: self.max_length - 1] + [self.eos_token_id]

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise and pad a batch -> {"input_ids", "attention_mask"} (B, T) int64."""
        check_texts(texts, self.empty_texts)
        return self.pad([self.token_ids(text, i) for i, text in enumerate(texts)])

    def pad(self, rows: Sequence[Sequence[int]], width: int | None = None) -> dict[str, torch.Tensor]:
        """Pad token-id rows (from ``token_ids``) to ``width`` (default: the longest row)
        -> {"input_ids", "attention_mask"} (B, width) int64."""
        longest = max(len(r) for r in rows)
        if width is not None and width < longest:
            raise ToolchainError(f"pad width {width} is shorter than the longest row ({longest})")
        width = width or longest
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.int64)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if self.padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row)
            attention_mask[i, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

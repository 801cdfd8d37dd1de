"""The EOS and padding contract shared by training, export and serving, as one tokenizer.json.

Every text becomes [BOS?] content... EOS. The contract lives in a ``tokenizers.Tokenizer`` built
once here (:func:`contract_tokenizer`): its post-processor (``TemplateProcessing``) puts the
backbone's own leading special tokens (Mistral's ``<s>``, none for SmolLM2) before the text and
EOS after it, its truncation cuts at ``max_length`` and keeps that EOS, its padding goes to the
contract's side with the contract's pad id. Training, merge, export and the ``Embedder`` all
tokenise through that object, and an artifact ships it as its top-level ``tokenizer.json``, so a
consumer with plain ``tokenizers`` gets the very ids the graph was verified on.

A literal EOS string inside a text is a token of the text (tokenizer.json cannot say "strip a
trailing EOS"); the template's EOS still follows it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import torch

from toolchain.errors import ToolchainError

PaddingSide = Literal["left", "right"]
# An empty (or whitespace-only) text embeds as the contract's EOS-only sequence ([BOS] EOS), as
# sentence-transformers embeds "" ([CLS] [SEP]); "refuse" makes it an error instead.
EmptyTexts = Literal["embed", "refuse"]
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


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


def _leading_special_tokens(backend) -> list[tuple[str, int]]:
    """The special tokens the backbone's own post-processor puts before a text (e.g. <s>)."""
    encoding = backend.encode("a", add_special_tokens=True)
    lead = []
    for token, token_id, special in zip(encoding.tokens, encoding.ids,
                                        encoding.special_tokens_mask):
        if not special:
            break
        lead.append((token, int(token_id)))
    return lead


def contract_tokenizer(hf_tokenizer, max_length: int, padding_side: PaddingSide):
    """A copy of ``hf_tokenizer``'s backend ``tokenizers.Tokenizer`` carrying the contract.

    Post-processor: the backbone's leading special tokens, ``$A``, EOS; truncation at
    ``max_length`` (EOS kept: tokenizers reserves room for the template's tokens); padding on
    ``padding_side`` with the pad id (the tokenizer's pad, else unk, else EOS).

    Raises:
        ToolchainError: no EOS token, a bad side or length, or a tokenizer without a fast backend.
    """
    from tokenizers import Tokenizer, processors

    if hf_tokenizer.eos_token_id is None:
        raise ToolchainError("tokenizer has no EOS token; the pooling contract needs one")
    if padding_side not in ("left", "right"):
        raise ToolchainError(f"padding_side must be left or right, got {padding_side!r}")
    if max_length < 2:
        raise ToolchainError(f"max_length must be >= 2, got {max_length}")
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ToolchainError(f"{type(hf_tokenizer).__name__}: no tokenizers backend "
                             "(tokenizer.json); the contract needs a fast tokenizer")
    tokenizer = Tokenizer.from_str(backend.to_str())  # a copy: the HF tokenizer stays as saved
    eos = (str(hf_tokenizer.eos_token), int(hf_tokenizer.eos_token_id))
    lead = [t for t in _leading_special_tokens(tokenizer) if t[1] != eos[1]]
    specials = dict(lead + [eos])
    single = " ".join([f"{t}:0" for t, _ in lead] + ["$A:0", f"{eos[0]}:0"])
    pair = " ".join([f"{t}:0" for t, _ in lead] + ["$A:0", f"{eos[0]}:0", "$B:1",
                                                    f"{eos[0]}:1"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=list(specials.items()))
    tokenizer.no_truncation()
    tokenizer.enable_truncation(max_length=int(max_length), direction="right")
    pad_id, pad_token = _pad_token(hf_tokenizer, eos)
    tokenizer.enable_padding(direction=padding_side, pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _pad_token(hf_tokenizer, eos: tuple[str, int]) -> tuple[int, str]:
    for token, token_id in ((hf_tokenizer.pad_token, hf_tokenizer.pad_token_id),
                            (hf_tokenizer.unk_token, hf_tokenizer.unk_token_id)):
        if token_id is not None:
            return int(token_id), str(token)
    return eos[1], eos[0]


class TextTokenizer:
    """The contract tokenizer (see module docstring) with the toolchain's checks and padding.

    Args:
        tokenizer: a loaded HF (fast) tokenizer with an EOS token; None when opened from a
            tokenizer.json (:meth:`from_file`).
        max_length: maximum tokens per text, EOS included.
        padding_side: "left" or "right".
        empty_texts: "embed" (an empty text becomes [BOS] EOS) or "refuse".
        backend: the contract ``tokenizers.Tokenizer`` (default: built from ``tokenizer``).
    """

    def __init__(self, tokenizer, max_length: int, padding_side: PaddingSide = "left",
                 empty_texts: EmptyTexts = "embed", backend=None) -> None:
        self.tokenizer = tokenizer
        self.backend = backend or contract_tokenizer(tokenizer, max_length, padding_side)
        contract = read_contract(self.backend, "tokenizer")
        self.max_length = contract["max_length"]
        self.padding_side = contract["padding_side"]
        self.eos_token_id = contract["eos_token_id"]
        self.pad_token_id = contract["pad_token_id"]
        self.bos_token_id = contract["bos_token_id"]
        self.empty_texts = check_empty_policy(empty_texts)

    @classmethod
    def from_file(cls, path: str | Path, empty_texts: EmptyTexts = "embed") -> "TextTokenizer":
        """Open a contract tokenizer.json (an artifact's), exactly as a consumer would.

        Raises:
            ToolchainError: unreadable file, or a file without the contract (no EOS template,
            truncation or padding).
        """
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON / fields
            raise ToolchainError(f"{path}: cannot read tokenizer: {err}") from None
        read_contract(backend, str(path))
        return cls(None, 0, empty_texts=empty_texts, backend=backend)

    def token_ids(self, text: str, index: int = 0) -> list[int]:
        """Token ids of one text, EOS last, at most max_length long."""
        if not isinstance(text, str):
            raise ToolchainError(f"text {index}: expected a string, got {type(text).__name__}")
        encoding = self.backend.encode(text)
        if self.empty_texts == "refuse" and all(encoding.special_tokens_mask):
            raise ToolchainError(f"text {index} ({text!r}) tokenises to nothing "
                                 "(empty_texts='refuse')")
        return list(encoding.ids)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise and pad a batch -> {"input_ids", "attention_mask"} (B, T) int64, with the
        contract tokenizer's own batch padding (what a consumer's ``encode_batch`` gives)."""
        check_texts(texts, self.empty_texts)
        if self.empty_texts == "refuse":
            for i, text in enumerate(texts):
                self.token_ids(text, i)
        encodings = self.backend.encode_batch(list(texts))
        return {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.int64),
                "attention_mask": torch.tensor([e.attention_mask for e in encodings],
                                               dtype=torch.int64)}

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

    def save(self, directory: Path) -> list[str]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (the HF
        layout, with ``model_max_length`` and ``padding_side`` of the contract); returns the
        names written."""
        directory = Path(directory)
        self.backend.save(str(directory / TOKENIZER_FILE))
        specials = self.special_tokens()
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "backend": "tokenizers",
                  "model_max_length": self.max_length, "padding_side": self.padding_side,
                  "truncation_side": "right", "clean_up_tokenization_spaces": False, **specials}
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (directory / SPECIAL_TOKENS_FILE).write_text(json.dumps(specials, indent=2) + "\n")
        return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE]

    def special_tokens(self) -> dict[str, str]:
        """{"bos_token"?, "eos_token", "pad_token"} as strings."""
        names = {"eos_token": self.eos_token_id, "pad_token": self.pad_token_id,
                 "bos_token": self.bos_token_id}
        return {name: self.backend.id_to_token(i) for name, i in names.items() if i is not None}


def read_contract(backend, where: str) -> dict:
    """The contract a tokenizers.Tokenizer carries: max_length (truncation), padding_side and
    pad_token_id (padding), eos_token_id (the template's last token) and bos_token_id (its first
    special token before ``$A``, or None).

    Raises:
        ToolchainError: no truncation, padding or template post-processor ending in EOS.
    """
    truncation, padding = backend.truncation, backend.padding
    state = json.loads(backend.post_processor.__getstate__()) if backend.post_processor else {}
    if not truncation or not padding or state.get("type") != "TemplateProcessing":
        raise ToolchainError(f"{where}: not a contract tokenizer (needs truncation, padding and a "
                             "TemplateProcessing post-processor ending in EOS)")
    pieces = state["single"]
    if "SpecialToken" not in pieces[-1]:
        raise ToolchainError(f"{where}: post_processor.single does not end in a special token (EOS)")
    ids = {name: spec["ids"][0] for name, spec in state["special_tokens"].items()}
    lead = [p["SpecialToken"]["id"] for p in pieces[:-1] if "SpecialToken" in p]
    return {"max_length": int(truncation["max_length"]),
            "padding_side": str(padding["direction"]), "pad_token_id": int(padding["pad_id"]),
            "eos_token_id": int(ids[pieces[-1]["SpecialToken"]["id"]]),
            "bos_token_id": int(ids[lead[0]]) if lead else None}

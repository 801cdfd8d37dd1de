"""A trained peer for the quality bench: a sentence-transformers mean-pooling encoder
(all-MiniLM-L6-v2: BertModel -> masked mean of the last layer -> L2 norm), as an artifact
directory that ``toolchain.embedder.Embedder`` opens like any other model.

On disk (every file hashed in manifest.json, written atomically)::

    manifest.json      kind "sentence_encoder", variant, pooling "mean", max_length, padding_side
    encoder/           the HF files: config.json, model.safetensors, tokenizer, modules.json,
                       1_Pooling/config.json (checked: mean pooling only)

The peer is evaluated under the preset's contract length (``max_length`` in the manifest), so
it sees the same truncated texts as the variants; it keeps its own tokenizer ([CLS] ... [SEP],
right padding: BERT's absolute positions start at the first token).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from toolchain.atomic import atomic_dir, read_manifest, write_manifest
from toolchain.contract import Attention, Pooling, Variant
from toolchain.errors import ToolchainError

KIND = "sentence_encoder"
ENCODER_DIR = "encoder"
REQUIRED = ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json")
OPTIONAL = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
            "sentence_bert_config.json", "config_sentence_transformers.json")
MEAN_ONLY = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False,
             "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}


def check_mean_pooling(source: Path) -> dict:
    """The source's pooling config, required to be plain masked mean pooling.

    Raises:
        ToolchainError: a required file is missing or the pooling is not mean-only.
    """
    for name in REQUIRED:
        if not (source / name).is_file():
            raise ToolchainError(f"{source / name}: missing (not a sentence-transformers "
                                 f"mean-pooling model directory)")
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    wrong = {k: pooling.get(k, False) for k, v in MEAN_ONLY.items() if pooling.get(k, False) != v}
    if wrong:
        raise ToolchainError(f"{source}/1_Pooling/config.json: only mean pooling is supported, "
                             f"got {wrong}")
    return pooling


def save_peer(source: str | Path, target: str | Path, name: str, max_length: int,
              extra: dict | None = None) -> dict:
    """Copy a sentence-transformers mean-pooling model into an artifact dir; returns the manifest.

    Args:
        source: the model directory (e.g. the ``all-minilm-l6-v2`` asset).
        target: the artifact directory, replaced atomically.
        name: recorded as the manifest's variant (e.g. "minilm-peer").
        max_length: tokens per text the peer is evaluated at ([CLS] and [SEP] included).
        extra: more manifest fields (provenance).
    """
    source = Path(source)
    pooling = check_mean_pooling(source)
    config = json.loads((source / "config.json").read_text())
    if max_length < 3:
        raise ToolchainError(f"max_length must be >= 3 for [CLS] text [SEP], got {max_length}")
    if max_length > int(config.get("max_position_embeddings", max_length)):
        raise ToolchainError(f"max_length {max_length} exceeds the peer's "
                             f"{config['max_position_embeddings']} position embeddings")
    with atomic_dir(Path(target)) as tmp:
        for rel in REQUIRED + tuple(o for o in OPTIONAL if (source / o).is_file()):
            (tmp / ENCODER_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, tmp / ENCODER_DIR / rel)
        fields = {"format_version": 1, "kind": KIND,
                  **Variant(name, Pooling.MEAN, Attention.BIDIRECTIONAL).fields(),
                  "max_length": int(max_length),
                  "padding_side": "right", "embedding_dim": int(pooling.get(
                      "word_embedding_dimension", config["hidden_size"])),
                  "architecture": (config.get("architectures") or ["?"])[0],
                  **(extra or {})}
        manifest = write_manifest(tmp, fields)
    return manifest


class PeerTokenizer:
    """The peer's own tokenizer under the artifact's length: [CLS] text [SEP], truncation keeps
    [SEP], right padding. Same call as ``TextTokenizer``: texts -> {"input_ids",
    "attention_mask"} int64 torch tensors (B, T)."""

    padding_side = "right"

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, int(max_length)
        self.pad_token_id = int(tokenizer.pad_token_id)
        # the last real token of every row (what the latency harness keeps last)
        self.eos_token_id = int(tokenizer.sep_token_id)
        self.bos_token_id = tokenizer.cls_token_id

    def __call__(self, texts: Sequence[str]) -> dict:
        if isinstance(texts, str):
            raise ToolchainError("expected a list of texts, got a single string")
        if len(texts) == 0:
            raise ToolchainError("empty text list: nothing to embed")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ToolchainError(f"text {i}: expected a string, got {type(text).__name__}")
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"].long(),
                "attention_mask": batch["attention_mask"].long()}


def mean_pool(hidden, attention_mask):
    """Masked mean over tokens, then L2 normalise (sentence-transformers Pooling + Normalize)."""
    import torch.nn.functional as F

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled.float(), p=2, dim=-1)


def open_peer_embedder(path: str | Path, device: str = "cpu", threads: int | None = None):
    """An ``Embedder`` over a peer artifact dir (files' sha256 checked first)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from toolchain.embedder import Embedder

    path = Path(path)
    manifest = read_manifest(path)
    if manifest.get("kind") != KIND:
        raise ToolchainError(f"{path}/manifest.json: kind {manifest.get('kind')!r} is not {KIND!r}")
    if threads:
        torch.set_num_threads(int(threads))
    encoder = path / ENCODER_DIR
    hf_tokenizer = AutoTokenizer.from_pretrained(str(encoder), local_files_only=True)
    hf_tokenizer.padding_side = manifest["padding_side"]
    tokenizer = PeerTokenizer(hf_tokenizer, manifest["max_length"])
    model = AutoModel.from_pretrained(str(encoder), local_files_only=True,
                                      dtype=torch.float32).to(device).eval()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=device)
            mask = torch.as_tensor(np.asarray(attention_mask, dtype=np.int64), device=device)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            return mean_pool(hidden, mask).cpu().numpy()

    return Embedder(f"{manifest['variant']}-torch-{device}", "torch", manifest, tokenizer, run,
                    device, torch.get_num_threads())

"""Embed texts with this model directory: numpy, tokenizers and onnxruntime only.

Shipped inside every poolattn artifact (and covered by its manifest's sha256s). It reads only the
directory's own files: ``tokenizer.json`` (the tokenisation contract: special tokens, EOS,
truncation at max_length, padding), ``config_sentence_transformers.json`` (named query prompts),
``model.onnx`` (inputs ``input_ids``/``attention_mask`` int64, output ``sentence_embedding``,
unit norm) and ``manifest.json`` (sha256 of every file: an edited file is refused).

    import sys; sys.path.insert(0, "path/to/artifact")
    from poolattn_onnx import OnnxEmbedding
    model = OnnxEmbedding("path/to/artifact")
    queries = model.encode(["what is a cat"], prompt_name="WordNetDefinitionRetrieval")
    documents = model.encode(["a small domesticated carnivorous mammal"])
    scores = queries @ documents.T          # cosine: the vectors are unit norm
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

MODEL_FILE = "model.onnx"
OUTPUT_NAME = "sentence_embedding"


def check_files(directory: Path) -> None:
    """Refuse a directory whose files differ from its manifest.json's sha256s."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for name, expected in manifest.get("files", {}).items():
        digest = hashlib.sha256()
        with open(directory / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise ValueError(f"{directory / name}: sha256 differs from manifest.json "
                             "(the file was changed)")


class OnnxEmbedding:
    """One artifact directory opened with plain tokenizers and onnxruntime.

    Args:
        directory: the artifact (model) directory.
        padding_side: "left" or "right" to override the file's padding side (the graph takes
            either), None to keep it.
        providers: onnxruntime execution providers (default: CPU).
        threads: intra-op threads (default: onnxruntime's).
        check: verify every file's sha256 against manifest.json first.
    """

    def __init__(self, directory, padding_side: str | None = None, providers=None,
                 threads: int | None = None, check: bool = True) -> None:
        self.directory = Path(directory)
        if check:
            check_files(self.directory)
        self.tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        if padding_side is not None:
            self.tokenizer.enable_padding(**{**self.tokenizer.padding, "direction": padding_side})
        config = self.directory / "config_sentence_transformers.json"
        self.prompts = json.loads(config.read_text()).get("prompts", {}) if config.is_file() else {}
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = onnxruntime.InferenceSession(
            str(self.directory / MODEL_FILE), options,
            providers=providers or ["CPUExecutionProvider"])

    def tokenize(self, texts, prompt: str | None = None) -> dict:
        """{"input_ids", "attention_mask"} int64 (B, T): the file's template, truncation and
        padding; ``prompt`` is prepended to every text."""
        texts = [(prompt or "") + text for text in texts]
        encodings = self.tokenizer.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The graph on one tokenised batch -> (B, H) float32, unit norm."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def encode(self, texts, prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32) -> np.ndarray:
        """Embed texts (a list of str) -> (N, H) float32, unit norm, in input order.

        Args:
            prompt_name: a key of config_sentence_transformers.json's prompts (a query
                instruction); documents take none.
            prompt: a literal prefix instead of ``prompt_name``.
        """
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise KeyError(f"prompt {prompt_name!r} not in {sorted(self.prompts)}")
            prompt = self.prompts[prompt_name]
        out = []
        for start in range(0, len(texts), batch_size):
            out.append(self.run(**self.tokenize(texts[start:start + batch_size], prompt)))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

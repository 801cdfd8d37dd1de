"""Wrap any ``encode(texts) -> np.ndarray`` object as an mteb 2.x encoder (duck-typed).

Instructions go through ``toolchain.data.training.format_query``, the function training uses,
so a query reads the same in training and evaluation. Documents (mteb prompt_type "document")
stay raw; in symmetric tasks (STS, classification, clustering) every input plays the query role,
as in E5-Mistral and Tang & Yang's evaluation, so every input gets the instruction.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Protocol

import numpy as np

from toolchain.data.training import format_query


class TextEncoder(Protocol):
    """What evaluate() needs: L2-normalised rows for a list of texts, and a name."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; avoid importing torch here
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def scoring_threads_limited():
    """Context: every OpenMP runtime except torch's runs one thread (mteb's k-means).

    scikit-learn's k-means on a few hundred points takes ~0.1 s on one thread but ~8 s with two
    on a busy 2-core machine (threads spin at barriers while their partner is descheduled).
    torch keeps whatever thread count the caller chose for encoding.
    """
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    others = [i["filepath"] for i in controller.info()
              if i["user_api"] == "openmp" and "/torch/" not in i["filepath"].replace("\\", "/")]
    return controller.select(filepath=others).limit(limits=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class MtebEncoder:
    """mteb EncoderProtocol over a :class:`TextEncoder`.

    Args:
        encoder: the wrapped object (``encode`` and ``name``).
        instruction_for: mteb TaskMetadata -> the instruction for its queries, or None.
        revision: recorded in mteb's result files (e.g. a checkpoint hash).
    """

    def __init__(self, encoder: TextEncoder, instruction_for: Callable[[Any], str | None],
                 revision: str = "local") -> None:
        self.encoder = encoder
        self.instruction_for = instruction_for
        self.revision = revision
        self.texts_encoded = 0  # unique texts actually sent to the encoder (for timing reports)
        # text (instruction included) -> unit embedding, across calls: a sharded task asks for
        # the same corpus / train split once per shard, and the encoder is deterministic
        self._cache: dict[str, np.ndarray] = {}

    @property
    def model_name(self) -> str:
        """``poolattn/<name>``: mteb wants organisation/name and uses it as a folder name."""
        return "poolattn/" + re.sub(r"[^A-Za-z0-9._-]+", "-", str(self.encoder.name)).strip("-")

    @property
    def mteb_model_meta(self):
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        return ModelMeta.create_empty(overwrites={
            "name": self.model_name, "revision": self.revision,
            "similarity_fn_name": ScoringFunction.COSINE, "use_instructions": True,
            "framework": ["PyTorch"]})

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type=None, **kwargs) -> np.ndarray:
        """Embed every text of an mteb DataLoader; each unique text is encoded once per
        wrapper (later calls reuse earlier embeddings)."""
        texts = [text for batch in inputs for text in batch["text"]]
        kind = getattr(prompt_type, "value", prompt_type)
        instruction = None if kind == "document" else self.instruction_for(task_metadata)
        texts = [format_query(t, instruction) for t in texts]
        # STS pairs repeat documents, shards repeat corpora: encode each new text once
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            self.texts_encoded += len(new)
            emb = _normalise(_as_numpy(self.encoder.encode(new)))
            if emb.shape[0] != len(new):
                raise ValueError(f"encoder returned {emb.shape[0]} rows for {len(new)} texts")
            self._cache.update(zip(new, emb))
        return np.stack([self._cache[t] for t in texts])

    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        a, b = _normalise(_as_numpy(embeddings1)), _normalise(_as_numpy(embeddings2))
        return np.atleast_2d(a) @ np.atleast_2d(b).T

    def similarity_pairwise(self, embeddings1, embeddings2) -> np.ndarray:
        a, b = _normalise(_as_numpy(embeddings1)), _normalise(_as_numpy(embeddings2))
        return np.sum(a * b, axis=-1)


class ModelTextEncoder:
    """Adapts a toolchain EmbeddingModel (``encode -> torch.Tensor``) to :class:`TextEncoder`.

    Args:
        model: anything with ``encode(texts, batch_size=...)``.
        name: recorded in mteb's results, e.g. ``tiny-mistral-m5``.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: Any, name: str, batch_size: int = 32) -> None:
        self.model, self.name, self.batch_size = model, name, batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        # sort by length so each batch pads little; restore the caller's order afterwards
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        emb = _as_numpy(self.model.encode([texts[i] for i in order], batch_size=self.batch_size))
        out = np.empty_like(emb)
        out[order] = emb
        return out

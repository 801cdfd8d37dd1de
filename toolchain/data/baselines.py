"""Reference encoders without a model: a floor for every task and a check of the suite itself.

``bow`` (hashed bag of words) is a weak but real lexical encoder; ``random`` gives each text a
fixed random unit vector, so it scores at chance. Both are deterministic.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class HashedBagOfWords:
    """Lower-cased word counts hashed (md5) into ``dim`` buckets, L2-normalised."""

    def __init__(self, dim: int = 512) -> None:
        self.dim, self.name = dim, f"bow-{dim}"

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        out = np.zeros((len(texts), self.dim))
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim] += 1
        return _unit(out)


class RandomEncoder:
    """A unit vector per text, seeded by the text's sha256: chance level on every task."""

    def __init__(self, dim: int = 64) -> None:
        self.dim, self.name = dim, f"random-{dim}"

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:12], 16) for t in texts]
        return _unit(np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]))


BASELINES = {"bow": HashedBagOfWords, "random": RandomEncoder}

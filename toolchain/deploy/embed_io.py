"""`poolattn embed` as real work: texts in (arguments, a text file or stdin one per line, or a
JSONL field), vectors out (.npy or JSONL), batched through any Embedder, with a progress bar on
long inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from toolchain.errors import ToolchainError

# Texts handed to Embedder.encode at a time: it sorts each block by length, and the bar moves.
BLOCK_BATCHES = 16
PROGRESS_MIN_TEXTS = 256


def read_texts(source: str, field: str | None = None) -> list[str]:
    """Texts from a file (``-``: stdin): one per line, or ``field`` of each JSONL object.

    Raises:
        ToolchainError: unreadable file, or a JSONL line that is not an object with a string
        ``field`` (file and line named).
    """
    name = "<stdin>" if source == "-" else source
    try:
        lines = (sys.stdin.read() if source == "-" else Path(source).read_text()).splitlines()
    except OSError as err:
        raise ToolchainError(f"{name}: cannot read texts: {err.strerror or err}") from None
    if field is None:
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ToolchainError(f"{name}:{number}: invalid JSON: {err.msg}") from None
        if not isinstance(value, dict) or not isinstance(value.get(field), str):
            raise ToolchainError(f"{name}:{number}: field {field!r} missing or not a string")
        texts.append(value[field])
    return texts


def resolve_prompt(model_path: Path, prompt_name: str | None, instruction: str | None) -> str:
    """The prefix for every text: a named prompt of the artifact's
    config_sentence_transformers.json (else of the evaluation suite), or an instruction."""
    from toolchain.deploy.prompts import artifact_prompts, prompt_of

    if instruction is not None:
        return prompt_of(instruction)
    if prompt_name is None:
        return ""
    config = Path(model_path) / "config_sentence_transformers.json"
    prompts = (json.loads(config.read_text()).get("prompts", {}) if config.is_file()
               else artifact_prompts(None))
    if prompt_name not in prompts:
        raise ToolchainError(f"prompt {prompt_name!r} unknown; known: {', '.join(sorted(prompts))}")
    return prompts[prompt_name]


def encode_all(embedder, texts: Sequence[str], batch_size: int, progress: bool | None) -> np.ndarray:
    """Embed in blocks of BLOCK_BATCHES batches (a bar over texts when ``progress``, by default
    on inputs of PROGRESS_MIN_TEXTS or more) -> (N, H) float32 in input order."""
    from tqdm import tqdm

    show = len(texts) >= PROGRESS_MIN_TEXTS if progress is None else progress
    block = batch_size * BLOCK_BATCHES
    parts = []
    with tqdm(total=len(texts), unit="text", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(texts), block):
            parts.append(embedder.encode(list(texts[start:start + block]), batch_size=batch_size))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def write_vectors(path: Path, vectors: np.ndarray) -> None:
    """``.npy`` (one (N, H) float32 array) or ``.jsonl`` ({"index", "embedding"} per line),
    written to a temp file and renamed."""
    from toolchain.atomic import write_text_atomic

    path = Path(path)
    if path.suffix == ".npy":
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, vectors.astype(np.float32))
        tmp.replace(path)
    elif path.suffix == ".jsonl":
        write_text_atomic(path, "".join(json.dumps({"index": i, "embedding": row.tolist()}) + "\n"
                                        for i, row in enumerate(vectors)))
    else:
        raise ToolchainError(f"{path}: output must end in .npy or .jsonl")


def summary(texts: Iterable[str], vectors: np.ndarray) -> list[str]:
    """Shape, norms and the first values of each vector (the smoke print)."""
    lines = [f"{tuple(vectors.shape)}, norms "
             f"{[round(float(n), 6) for n in np.linalg.norm(vectors[:8], axis=1)]}"]
    for text, row in zip(list(texts)[:8], vectors):
        lines.append(f"  {text[:40]!r}: {[round(float(x), 4) for x in row[:4]]} ...")
    return lines

"""The consumer check on any artifacts (e.g. a SmolLM2 export): sentence-transformers and the
shipped no-project-code consumer (the artifact's poolattn_onnx.py, which imports only numpy,
tokenizers and onnxruntime; both padding sides) against
``Embedder.open`` on the hard texts and the probe texts, queries through a named prompt.

    .venv/bin/python benchmarks/deploy/consumers.py runs/smollm2-135m-study/m5/onnx-fp32 \\
        runs/smollm2-135m-study/m5/onnx-int8 --json out.json

Recorded: benchmarks/results/deploy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from toolchain.data.training import format_query  # noqa: E402
from toolchain.deploy.consumer_check import consumer_texts  # noqa: E402
from toolchain.deploy.prompts import evaluation_instructions  # noqa: E402
from toolchain.embedder import Embedder  # noqa: E402
from toolchain.probe_texts import PROBE_TEXTS  # noqa: E402


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def check(artifact: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    special = json.loads((artifact / "special_tokens_map.json").read_text())
    manifest = json.loads((artifact / "manifest.json").read_text())
    hard, prompt_name = consumer_texts(special["eos_token"], manifest["max_length"])
    texts = hard + list(PROBE_TEXTS)
    instruction = evaluation_instructions()[prompt_name]
    embedder = Embedder.open(artifact, provider="cpu")
    documents = embedder.encode(texts)
    queries = embedder.encode([format_query(t, instruction) for t in texts])
    start = time.perf_counter()
    model = SentenceTransformer(str(artifact), trust_remote_code=True, local_files_only=True,
                                device="cpu")
    row = {"artifact": str(artifact), "profile": manifest["profile"]["name"],
           "variant": manifest["variant"], "texts": len(texts), "prompt_name": prompt_name,
           "st_documents_min_cosine": _min_cosine(model.encode(texts), documents),
           "st_queries_min_cosine": _min_cosine(model.encode(texts, prompt_name=prompt_name),
                                                queries)}
    sys.path.insert(0, str(artifact))
    from poolattn_onnx import OnnxEmbedding

    for side in ("left", "right"):
        plain = OnnxEmbedding(artifact, padding_side=side)
        row[f"plain_{side}_documents_min_cosine"] = _min_cosine(plain.encode(texts), documents)
        row[f"plain_{side}_queries_min_cosine"] = _min_cosine(
            plain.encode(texts, prompt_name=prompt_name), queries)
    sys.path.remove(str(artifact))
    sys.modules.pop("poolattn_onnx", None)
    row["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [check(a) for a in args.artifacts]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

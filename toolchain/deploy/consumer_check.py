"""Verify's consumer gate: the artifact's own ``poolattn_onnx.py`` (numpy, tokenizers and
onnxruntime only, no project code) must reproduce the reference model's token ids and the
Embedder's vectors on the texts where a consumer goes wrong first.

Texts: an empty text, one far longer than max_length (truncation must keep EOS, and the graph's
rotary cache must not be exceeded), one ending in the literal EOS string, non-Latin scripts with
emoji, and an instruction-formatted query (through a prompt named in
config_sentence_transformers.json). Both padding sides are run.

Gates: ids equal to the reference tokenizer's (exactly); consumer vs Embedder at the profile's
invariance cosine (same graph: only padding and batch partners differ); consumer vs the PyTorch
reference at the profile's parity cosine.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from toolchain.deploy.model_dir import CONSUMER_MODULE
from toolchain.deploy.prompts import evaluation_instructions
from toolchain.data.training import format_query
from toolchain.parity import compare

QUERY = "cat"


def load_shipped_consumer(artifact: Path):
    """Import the artifact's poolattn_onnx.py itself (a unique module name per file content)."""
    path = Path(artifact) / CONSUMER_MODULE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"poolattn_onnx_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def consumer_texts(eos_token: str, max_length: int) -> tuple[list[str], str]:
    """(raw texts, the prompt name of the instruction query appended as the last text)."""
    long_text = " ".join(f"sentence {i} of a text far longer than the contract allows."
                         for i in range(max_length))
    texts = ["", long_text, f"A sentence that ends in the literal end-of-sequence string{eos_token}",
             "Москва — столица России. 東京は日本の首都です。مرحبا بالعالم 🙂🚀👍🏽"]
    return texts, next(iter(evaluation_instructions()))


def consumer_expectations(embedder, reference) -> dict:
    """What the consumer must reproduce, computed before the Embedder's session is freed (so a
    large graph is never loaded twice at once): the texts, the reference tokenizer's ids, the
    Embedder's and the PyTorch reference's vectors."""
    import torch

    tokens = embedder.tokenizer.special_tokens()
    texts, prompt_name = consumer_texts(tokens["eos_token"], embedder.tokenizer.max_length)
    all_texts = texts + [format_query(QUERY, evaluation_instructions()[prompt_name])]
    batch = reference.tokenizer(all_texts)
    with torch.inference_mode():
        theirs = reference(batch["input_ids"], batch["attention_mask"]).numpy()
    return {"texts": texts, "prompt_name": prompt_name, "embedder": embedder.encode(all_texts),
            "reference": theirs, "ids": [reference.tokenizer.token_ids(t) for t in all_texts]}


def consumer_gate(artifact: Path, expected: dict, gates, threads: int | None) -> dict:
    """Run the shipped consumer (one session, each padding side) against ``expected`` (from
    :func:`consumer_expectations`); returns the figures and a list of failures."""
    if not (Path(artifact) / CONSUMER_MODULE).is_file():
        return {"failures": [f"{CONSUMER_MODULE} missing: the artifact predates the consumer "
                             "contract; re-export it"]}
    module = load_shipped_consumer(artifact)
    texts, prompt_name = expected["texts"], expected["prompt_name"]
    # check=False: verify opened the artifact through read_manifest, which hashed every file
    consumer = module.OnnxEmbedding(artifact, threads=threads, check=False)
    figures, failures = {"texts": len(texts) + 1, "prompt_name": prompt_name}, []
    for side in ("left", "right"):
        consumer.tokenizer.enable_padding(**{**consumer.tokenizer.padding, "direction": side})
        got = np.concatenate([consumer.encode(texts),
                              consumer.encode([QUERY], prompt_name=prompt_name)])
        rows = [consumer.tokenize([t]) for t in texts]
        rows.append(consumer.tokenize([QUERY], prompt=consumer.prompts[prompt_name]))
        mine = [r["input_ids"][0].tolist() for r in rows]
        if mine != expected["ids"]:
            bad = [i for i, (m, w) in enumerate(zip(mine, expected["ids"])) if m != w]
            failures.append(f"consumer ({side} padding): token ids differ from the reference "
                            f"model's on texts {bad}")
        figures[side] = {f"vs_{key}_min_cosine": compare(got, expected[key])["min_cosine"]
                         for key in ("embedder", "reference")}
        for name, gate, what in (("vs_embedder_min_cosine", gates.invariance_min_cosine,
                                  "Embedder"),
                                 ("vs_reference_min_cosine", gates.parity_min_cosine, "PyTorch")):
            if not figures[side][name] >= gate:
                failures.append(f"consumer ({side} padding) vs {what}: min cosine "
                                f"{figures[side][name]:.7f} < {gate:g}")
    return {**figures, "failures": failures}

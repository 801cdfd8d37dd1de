"""Embedder: the same interface and the same numbers over ONNX Runtime and PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolchain.contract import source_model_dir
from toolchain.embedder import Embedder
from toolchain.errors import ToolchainError
from toolchain.probe_texts import PROBE_TEXTS
from toolchain.parity import random_batch

from conftest import TEXTS
from test_export_fixtures import cached_export, one_thread  # noqa: F401


@pytest.fixture(scope="module", params=[("tiny-qwen2", "m5"), ("tiny-llama", "m3")])
def pair(request, tmp_path_factory):
    run = cached_export(tmp_path_factory, *request.param)
    return (Embedder.from_artifact(run / "onnx-fp32", provider="cpu", threads=1),
            Embedder.from_model_dir(run / "merged", threads=1))


def run_of(embedder) -> Path:
    """The run directory of an artifact Embedder (manifests hold relative paths only)."""
    return source_model_dir(embedder.path, embedder.manifest).parent


def test_onnx_and_torch_agree_on_texts(pair):
    onnx_emb, torch_emb = pair
    texts = PROBE_TEXTS + TEXTS
    a, b = onnx_emb.encode(texts, batch_size=5), torch_emb.encode(texts, batch_size=5)
    assert a.dtype == np.float32 and a.shape == (len(texts), onnx_emb.manifest["embedding_dim"])
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_onnx_matches_torch_on_many_shapes(pair, side):
    onnx_emb, torch_emb = pair
    rng = np.random.default_rng(7)
    pad, vocab = onnx_emb.manifest["pad_token_id"], onnx_emb.manifest["vocab_size"]
    for batch, length in [(1, 1), (1, 2), (2, 3), (5, 7), (3, 40), (8, 77), (2, 128)]:
        ids, mask = random_batch(rng, batch, length, vocab, pad, side)
        np.testing.assert_allclose(onnx_emb.run(ids, mask), torch_emb.run(ids, mask),
                                   atol=1e-4, rtol=0, err_msg=f"{batch}x{length} {side}")


def test_encode_keeps_input_order_and_ignores_batching(pair):
    onnx_emb, _ = pair
    texts = ["short", PROBE_TEXTS[4], "a b c", PROBE_TEXTS[11]]
    one_by_one = np.concatenate([onnx_emb.encode([t]) for t in texts])
    np.testing.assert_allclose(onnx_emb.encode(texts, batch_size=3), one_by_one, atol=1e-5, rtol=0)


def test_interface_fields_and_tokenization(pair):
    onnx_emb, torch_emb = pair
    assert (onnx_emb.kind, torch_emb.kind) == ("onnx", "torch")
    assert onnx_emb.provider == "cpu" and torch_emb.provider == "cpu"
    assert onnx_emb.threads == 1 and torch_emb.threads == 1
    variant = onnx_emb.manifest["variant"]
    assert onnx_emb.name == f"{variant}-onnx-fp32" and torch_emb.name == f"{variant}-torch-cpu"
    batch = onnx_emb.tokenize(["hello world", "a much longer text than the first one"])
    assert batch["input_ids"].dtype == np.int64 and batch["attention_mask"].dtype == np.int64
    eos = onnx_emb.manifest["eos_token_id"]
    side = onnx_emb.manifest["padding_side"]
    last = batch["input_ids"][:, -1] if side == "left" else batch["input_ids"][np.arange(2), batch[
        "attention_mask"].sum(1) - 1]
    assert (last == eos).all()
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(batch[key], torch_emb.tokenize(["hello world",
                                      "a much longer text than the first one"])[key])


def test_bad_requests_are_clear_errors(pair):
    import onnxruntime

    onnx_emb, _ = pair
    artifact = run_of(onnx_emb) / "onnx-fp32"
    with pytest.raises(ToolchainError, match="empty text list"):
        onnx_emb.encode([])
    with pytest.raises(ToolchainError, match="provider must be auto, cpu or cuda"):
        Embedder.from_artifact(artifact, provider="tpu")
    with pytest.raises(ToolchainError, match="kind 'embedding_model' is not 'onnx_artifact'"):
        Embedder.from_artifact(artifact.parent / "merged")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ToolchainError, match="no CUDAExecutionProvider"):
            Embedder.from_artifact(artifact, provider="cuda")
        assert Embedder.from_artifact(artifact).provider == "cpu"  # auto falls back


def test_open_dispatches_on_the_manifest_kind(pair):
    onnx_emb, _ = pair
    run = run_of(onnx_emb)
    opened = [Embedder.open(run / "onnx-fp32", provider="cpu", threads=1),
              Embedder.open(run / "merged", provider="cpu", threads=1)]
    assert [e.kind for e in opened] == ["onnx", "torch"]
    texts = ["hello world", PROBE_TEXTS[3]]
    np.testing.assert_allclose(opened[0].encode(texts), opened[1].encode(texts), atol=1e-4, rtol=0)
    with pytest.raises(ToolchainError, match="no manifest"):
        Embedder.open(run)
    with pytest.raises(ToolchainError, match="empty_texts must be embed or refuse"):
        Embedder.open(run / "onnx-fp32", provider="cpu", empty_texts="skip")


@pytest.mark.parametrize("bad", [None, 3, b"bytes"])
def test_non_string_texts_get_the_contracts_error(pair, bad):
    for embedder in pair:
        with pytest.raises(ToolchainError, match=f"text 1: expected a string, got {type(bad).__name__}"):
            embedder.encode(["fine", bad, "also fine"])


def test_empty_string_embeds_as_eos_only_unless_refused(pair):
    """Policy: "" embeds (as [BOS] EOS), identically alone and in a batch, on both runtimes;
    empty_texts="refuse" makes it an error naming the text."""
    onnx_emb, torch_emb = pair
    batch = onnx_emb.encode(["a real text", "", "another one"])
    alone = onnx_emb.encode([""])
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(torch_emb.encode([""]), alone, atol=1e-4, rtol=0)
    run = run_of(onnx_emb)
    refusing = Embedder.open(run / "onnx-fp32", provider="cpu", threads=1, empty_texts="refuse")
    with pytest.raises(ToolchainError, match="text 1 is empty"):
        refusing.encode(["fine", ""])

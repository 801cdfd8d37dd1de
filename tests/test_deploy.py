"""Artifacts served by real consumers: sentence-transformers and plain tokenizers + onnxruntime
(no project code), for m1..m5 in fp32 and int8; edited files refused; relative paths only."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain.atomic import read_manifest, write_manifest
from toolchain.data.training import format_query
from toolchain.deploy.consumer_check import consumer_texts
from toolchain.deploy.model_dir import SHIPPED
from toolchain.deploy.prompts import evaluation_instructions
from toolchain.embedder import Embedder
from toolchain.errors import ToolchainError
from toolchain.export.verify import verify_artifact

from test_export_fixtures import cached_export, one_thread  # noqa: F401

# every variant on the three architectures; each run exported once with both profiles
CASES = [("tiny-mistral", "m1"), ("tiny-qwen2", "m2"), ("tiny-llama", "m3"),
         ("tiny-mistral", "m4"), ("tiny-qwen2", "m5")]
PROFILES = ("int8", "fp32")
ALLOWED_IMPORTS = {"__future__", "hashlib", "json", "pathlib", "numpy", "onnxruntime",
                   "tokenizers"}


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}-{v}" for p, v in CASES])
def run(request, tmp_path_factory) -> Path:
    return cached_export(tmp_path_factory, *request.param, profiles=PROFILES)


def hard_texts(artifact: Path) -> tuple[list[str], str, str]:
    """(raw hard texts, a prompt name, its instruction) for this artifact's contract."""
    special = json.loads((artifact / "special_tokens_map.json").read_text())
    manifest = read_manifest(artifact)
    texts, name = consumer_texts(special["eos_token"], manifest["max_length"])
    return texts + ["a query in the instruction format"], name, evaluation_instructions()[name]


def gate_cosine(artifact: Path) -> float:
    """fp32: 0.9999; int8: verify's own invariance gate (same graph, other batching)."""
    return min(0.9999, read_manifest(artifact)["profile"]["gates"]["invariance_min_cosine"])


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


CONSUMER_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from poolattn_onnx import OnnxEmbedding
texts, prompt_name = json.loads(sys.argv[2]), sys.argv[3]
out = {}
for side in ("left", "right"):
    model = OnnxEmbedding(sys.argv[1], padding_side=side, threads=1)
    out[side] = np.concatenate([model.encode(texts[:-1]),
                                model.encode(texts[-1:], prompt_name=prompt_name)]).tolist()
assert not any(name.split(".")[0] in ("toolchain", "torch", "transformers") for name in sys.modules)
print(json.dumps(out))
"""


@pytest.mark.parametrize("profile", ["fp32", "int8"])
def test_plain_onnxruntime_consumer_gets_the_embedders_vectors(run, profile, tmp_path):
    """A fresh interpreter that imports only the artifact's poolattn_onnx.py (numpy, tokenizers,
    onnxruntime) embeds the hard texts like the Embedder, padded on either side."""
    artifact = run / f"onnx-{profile}"
    texts, name, instruction = hard_texts(artifact)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-c", CONSUMER_SCRIPT, str(artifact),
                             json.dumps(texts), name], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = json.loads(result.stdout)
    embedder = Embedder.open(artifact, provider="cpu", threads=1)
    expected = embedder.encode(texts[:-1] + [format_query(texts[-1], instruction)])
    for side in ("left", "right"):
        cosine = rowwise_cosine(np.array(vectors[side], dtype=np.float32), expected)
        assert cosine.min() >= gate_cosine(artifact), (side, cosine)


@pytest.mark.parametrize("profile", ["fp32", "int8"])
def test_sentence_transformers_loads_the_artifact_offline(run, profile, monkeypatch):
    from sentence_transformers import SentenceTransformer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    artifact = run / f"onnx-{profile}"
    texts, name, instruction = hard_texts(artifact)
    model = SentenceTransformer(str(artifact), trust_remote_code=True, local_files_only=True,
                                device="cpu")
    embedder = Embedder.open(artifact, provider="cpu", threads=1)
    queries = model.encode(texts, prompt_name=name, batch_size=3)
    documents = model.encode(texts, batch_size=4)
    assert queries.shape == (len(texts), read_manifest(artifact)["embedding_dim"])
    gate = gate_cosine(artifact)
    assert rowwise_cosine(queries, embedder.encode([format_query(t, instruction)
                                                    for t in texts])).min() >= gate
    assert rowwise_cosine(documents, embedder.encode(texts)).min() >= gate
    assert model.similarity_fn_name == "cosine"
    assert model.max_seq_length == read_manifest(artifact)["max_length"]
    assert model.get_embedding_dimension() == queries.shape[1]


def test_manifest_has_relative_paths_and_the_graphs_real_runtime_needs(run):
    import onnx

    for profile in PROFILES:
        artifact = run / f"onnx-{profile}"
        manifest = read_manifest(artifact)
        text = json.dumps(manifest)
        assert str(run.resolve()) not in text
        assert "model_dir" not in manifest and "run" not in manifest["source"]
        graph = onnx.load(str(artifact / "model.onnx"), load_external_data=False)
        imports = {o.domain or "": o.version for o in graph.opset_import}
        runtime = manifest["runtime"]
        assert runtime["opset_imports"] == imports and manifest["opset"] == imports[""]
        used = {n.domain or "" for n in graph.graph.node}
        assert used <= set(runtime["op_types"]) <= set(imports)
        default_ops = runtime["op_types"].get("", [])
        if imports[""] >= 23 and "QuantizeLinear" in default_ops:
            assert runtime["min_onnxruntime"] == "1.24"  # no QuantizeLinear(23) kernel in 1.23
        elif "Attention" in default_ops:
            assert runtime["min_onnxruntime"] == "1.23"  # ONNX Attention's CPU kernel
        for name in ("config.json", "modules.json", "sentence_bert_config.json",
                     "config_sentence_transformers.json", "1_Pooling/config.json",
                     "tokenizer.json", "tokenizer_config.json", "poolattn_onnx.py",
                     "poolattn_sentence_transformers.py", "triton-config/config.pbtxt"):
            assert name in manifest["files"], name
        # on sys.path (as the consumer docs show) no folder of the artifact shadows a package
        # (__pycache__ is what importing the shipped modules leaves; it shadows nothing)
        assert not [d.name for d in artifact.iterdir() if d.is_dir() and d.name.isidentifier()
                    and d.name != "__pycache__"]
        triton = (artifact / "triton-config" / "config.pbtxt").read_text()
        assert f'name: "sentence_embedding", data_type: TYPE_FP32, dims: [ {manifest["embedding_dim"]} ]' in triton
        config = json.loads((artifact / "config.json").read_text())
        assert config["model_type"] in ("mistral", "qwen2", "llama")
        assert config["poolattn"]["variant"] == manifest["variant"]
        tokenizer_config = json.loads((artifact / "tokenizer_config.json").read_text())
        assert tokenizer_config["model_max_length"] == manifest["max_length"]
        assert tokenizer_config["padding_side"] == manifest["padding_side"]
        assert manifest["verify"]["consumer"]["left"]["vs_embedder_min_cosine"] >= 0.9999


def test_shipped_consumer_imports_no_project_code():
    for path in SHIPPED.glob("poolattn_onnx.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.level == 0}
        assert names <= ALLOWED_IMPORTS, names - ALLOWED_IMPORTS


@pytest.fixture(scope="module")
def tamper_run(tmp_path_factory) -> Path:
    return cached_export(tmp_path_factory, "tiny-mistral", "m1", profiles=PROFILES)


def copied_artifact(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "onnx-fp32"
    shutil.copytree(run / "onnx-fp32", copy)
    return copy


@pytest.mark.parametrize("name", ["tokenizer.json", "config_sentence_transformers.json",
                                  "poolattn_onnx.py"])
def test_an_edited_file_is_refused_by_sha256(tamper_run, tmp_path, name):
    edited = copied_artifact(tamper_run, tmp_path)
    with open(edited / name, "a") as handle:
        handle.write("\n")
    with pytest.raises(ToolchainError, match=f"{name}: sha256 differs"):
        Embedder.open(edited, provider="cpu")
    sys.path.insert(0, str(edited))
    try:
        from poolattn_onnx import OnnxEmbedding  # the shipped consumer checks too

        with pytest.raises(ValueError, match="sha256 differs"):
            OnnxEmbedding(edited)
    finally:
        sys.path.remove(str(edited))
        sys.modules.pop("poolattn_onnx", None)


def test_verify_fails_an_artifact_whose_prompts_break_the_contract(tamper_run, tmp_path):
    """A prompt that is not the instruction the model was evaluated with, re-hashed so sha256
    passes: the consumer gate sees other token ids than the reference's and fails verify."""
    broken = copied_artifact(tamper_run, tmp_path)
    path = broken / "config_sentence_transformers.json"
    config = json.loads(path.read_text())
    config["prompts"][next(iter(evaluation_instructions()))] = "query: "
    path.write_text(json.dumps(config))
    manifest = read_manifest(broken, verify=False)
    manifest.pop("files")
    write_manifest(broken, manifest)
    report = verify_artifact(broken, model_dir=tamper_run / "merged", threads=1)
    assert not report["passed"]
    assert any("token ids differ" in f for f in report["failures"]), report["failures"]


@pytest.mark.slow
def test_portable_profile_runs_under_onnxruntime_1_22(tmp_path_factory, tmp_path):
    """The portable graph (opset 18, no fusions) in a throwaway venv with TEI's ONNX Runtime
    (1.22.1, from PyPI) gives the Embedder's vectors; the fused fp32 graph does not load there."""
    run = cached_export(tmp_path_factory, "tiny-mistral", "m5", profiles=("portable", "fp32"))
    manifest = read_manifest(run / "onnx-portable")
    assert manifest["runtime"]["opset_imports"] == {"": 18}
    assert manifest["runtime"]["tested_onnxruntime"] == ["1.22.1"]
    out = tmp_path / "rows.json"
    script = Path(__file__).parents[1] / "benchmarks" / "deploy" / "old_ort.py"
    subprocess.run([sys.executable, str(script), str(run / "onnx-portable"), str(run / "onnx-fp32"),
                    "--versions", "1.22.1", "--venv-root", str(tmp_path / "venvs"),
                    "--json", str(out)], check=True, timeout=1200)
    portable, fused = json.loads(out.read_text())
    assert portable["onnxruntime"] == "1.22.1" and portable["error"] is None
    assert min(portable["min_cosine_left"], portable["min_cosine_right"]) >= 0.9999
    assert fused["error"] and "opset" in fused["error"].lower()


def test_embed_command_reads_files_and_writes_npy_and_jsonl(tamper_run, tmp_path):
    from click.testing import CliRunner

    from toolchain.cli import main

    artifact = tamper_run / "onnx-fp32"
    name = next(iter(evaluation_instructions()))
    rows = [{"query": f"word {i}", "id": i} for i in range(40)] + [{"query": ""}]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "queries.jsonl"
    result = CliRunner().invoke(main, ["embed", "--model", str(artifact), "--input", str(source),
                                       "--field", "query", "--prompt-name", name, "-o", str(out),
                                       "--batch-size", "3", "--progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["index"] for w in written] == list(range(len(rows)))
    expected = Embedder.open(artifact, provider="cpu", threads=1).encode(
        [format_query(r["query"], evaluation_instructions()[name]) for r in rows])
    np.testing.assert_allclose(np.array([w["embedding"] for w in written]), expected, atol=1e-5)

    lines = tmp_path / "texts.txt"
    lines.write_text("first\nsecond text\n")
    npy = tmp_path / "v.npy"
    result = CliRunner().invoke(main, ["embed", "--model", str(artifact), "--input", str(lines),
                                       "extra", "-o", str(npy), "--threads", "1"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(npy), Embedder.open(artifact, provider="cpu", threads=1)
                               .encode(["extra", "first", "second text"]), atol=1e-5)

    source.write_text('{"query": "fine"}\n{"text": "no query"}\n')
    result = CliRunner().invoke(main, ["embed", "--model", str(artifact), "--input", str(source),
                                       "--field", "query"])
    assert result.exit_code == 2 and f"{source}:2: field 'query' missing" in result.output


def test_prompts_name_every_training_and_evaluation_instruction():
    from toolchain.deploy.prompts import artifact_prompts, prompt_of
    from toolchain.presets import load_preset

    prompts = artifact_prompts("smollm2-135m-study")
    assert prompts["document"] == ""
    for name, instruction in evaluation_instructions().items():
        assert prompts[name] + "q" == format_query("q", instruction)
    mixture = load_preset("smollm2-135m-study").sections["train"]["mixture"]
    for source in mixture:
        if source.get("instruction"):
            assert prompts[f"train-{source['name']}"] == prompt_of(source["instruction"])
    assert "train-data" in artifact_prompts("tiny-mistral")  # rows carry their instruction


def test_consumer_cosine_treats_two_zero_vectors_as_agreeing():
    """A random-weight backbone with pad = EOS has a zero EOS embedding row, so the empty text
    embeds as exactly zero on every path: the consumer gate must read that as agreement, and a
    zero vector against a real one as disagreement (never NaN, which fails every gate)."""
    from toolchain.parity import compare

    def min_cosine(a, b):
        return compare(a, b)["min_cosine"]

    unit, zero = np.eye(1, 8), np.zeros((1, 8))
    assert min_cosine(np.vstack([unit, zero]), np.vstack([unit, zero])) == 1.0
    assert min_cosine(zero, unit) == 0.0
    assert min_cosine(unit, -unit) == -1.0

"""`poolattn export` / `verify`: one verified ONNX graph per variant, attention baked in."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import yaml
from click.testing import CliRunner

from toolchain.atomic import read_manifest, write_manifest
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.export.profiles import list_profiles, load_profile
from toolchain.export.verify import verify_artifact
from toolchain.modeling import HeadConfig, head_macs

from test_export_fixtures import cached_export, make_trained_run, one_thread  # noqa: F401

# Three architectures, causal and bidirectional; tiny-mistral m5 runs through the CLI below.
# (tiny-llama m4 is the external-data test's model.)
CASES = [("tiny-mistral", "m1"), ("tiny-qwen2", "m2"), ("tiny-llama", "m3"), ("tiny-qwen2", "m5")]
REQUIRED = ("format_version", "variant", "pooling", "attention", "embedding_dim", "max_length",
            "padding_side", "eos_token_id", "instruction_templates", "input_names",
            "output_names", "opset", "profile", "files", "verify", "versions", "source")


@pytest.mark.parametrize("preset,variant", CASES)
def test_export_is_verified_and_self_describing(tmp_path_factory, preset, variant):
    artifact = cached_export(tmp_path_factory, preset, variant) / "onnx-fp32"
    manifest = read_manifest(artifact)
    assert all(key in manifest for key in REQUIRED), set(REQUIRED) - set(manifest)
    assert set(manifest["files"]) >= {"model.onnx", "tokenizer.json", "tokenizer_config.json"}
    assert set(manifest["versions"]) >= {"torch", "transformers", "onnx", "onnxruntime"}
    report = manifest["verify"]
    assert report["passed"] and report["failures"] == []
    texts = report["parity_texts"]
    assert texts["max_abs"] <= 1e-4 and texts["min_cosine"] >= 0.9999
    assert report["parity_random_shapes"]["max_abs"] <= 1e-4
    assert {"1x1l", "4x64r", "2x128l"} <= set(report["parity_random_shapes"]["shapes"])
    assert report["batch_invariance"]["max_abs"] <= 1e-4
    assert report["unit_norm_max_deviation"] <= 1e-4
    probe = report["attention_probe"]
    assert probe["observed"] == manifest["attention"]
    if manifest["attention"] == "causal":
        assert max(probe["first_token_shift"]) == 0.0
    else:
        assert min(probe["first_token_shift"]) > 1e-2

    graph = onnx.load(str(artifact / "model.onnx"))
    inputs = {i.name: i.type.tensor_type for i in graph.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for tensor_type in inputs.values():
        assert tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(d.dim_param and not d.dim_value for d in tensor_type.shape.dim)  # dynamic
    assert [o.name for o in graph.graph.output] == ["sentence_embedding"]
    assert graph.opset_import[0].version >= 18
    names = {t.name for t in graph.graph.initializer}
    config = HeadConfig(**json.loads((artifact.parent / "merged/pooling/config.json").read_text()))
    saved = manifest["precomputed"]["flops_per_text"]
    if variant == "m1":
        assert saved == 0 and "latent_queries" not in names
    else:  # the query projection is a stored constant; its weights are not in the graph
        assert "latent_queries" in names
        assert not any("to_q" in n or "norm_latents" in n for n in names)
        assert saved == 2 * head_macs(config, 1)["input_independent"] > 0


def _relabel(artifact, target, attention):
    shutil.copytree(artifact, target)
    fields = read_manifest(target)
    fields.pop("files")
    fields["attention"] = attention
    write_manifest(target, fields)  # re-hashed: only the graph itself can contradict the label


@pytest.mark.parametrize("preset,variant,wrong", [("tiny-mistral", "m1", "bidirectional"),
                                                  ("tiny-qwen2", "m5", "causal")])
def test_wrong_attention_label_is_caught(tmp_path_factory, tmp_path, preset, variant, wrong):
    run = cached_export(tmp_path_factory, preset, variant)
    _relabel(run / "onnx-fp32", tmp_path / "relabelled", wrong)
    report = verify_artifact(tmp_path / "relabelled", model_dir=run / "merged", threads=1)
    assert not report["passed"]
    actual = "causal" if wrong == "bidirectional" else "bidirectional"
    assert any(f.startswith(f"attention: graph behaves {actual}") and f"manifest says {wrong}" in f
               for f in report["failures"]), report["failures"]
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "relabelled"),
                                       "--model-dir", str(run / "merged"), "--threads", "1"])
    assert result.exit_code == 1 and f"graph behaves {actual}" in result.output


def test_verify_caps_rows_per_call_by_the_heads_working_set(tmp_path_factory, monkeypatch):
    """A head whose per-text working set exceeds the budget is verified 2 texts a call (the
    paper head at hidden 4096: ~0.6 GB a text), with the same verdict and parity."""
    from toolchain.export import verify

    run = cached_export(tmp_path_factory, "tiny-qwen2", "m5")
    whole = verify_artifact(run / "onnx-fp32", threads=1)
    assert whole["rows_per_call"] >= 16  # the tiny head: every probe text in one call
    monkeypatch.setattr(verify, "ACTIVATION_BUDGET_BYTES", 1)
    paired = verify_artifact(run / "onnx-fp32", threads=1)
    assert paired["passed"] and paired["rows_per_call"] == 2
    assert paired["parity_texts"]["max_abs"] <= 1e-4
    assert paired["parity_random_shapes"]["shapes"] == whole["parity_random_shapes"]["shapes"]


def test_tampered_artifact_is_refused(tmp_path_factory, tmp_path):
    from toolchain.embedder import Embedder

    run = cached_export(tmp_path_factory, "tiny-llama", "m3")
    shutil.copytree(run / "onnx-fp32", tmp_path / "a")
    graph = tmp_path / "a/model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ToolchainError, match="model.onnx: sha256 differs"):
        Embedder.from_artifact(tmp_path / "a", provider="cpu")
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "a")])
    assert result.exit_code == 2 and "sha256 differs" in result.output


def test_make_export_path_merge_export_int8_verify(tmp_path):
    """What `make export` runs for one variant, through the CLI; int8 cosine reported and gated."""
    run = make_trained_run(tmp_path, "tiny-mistral", "m5")
    runner = CliRunner()
    merged = runner.invoke(main, ["merge", str(run)])
    assert merged.exit_code == 0, merged.output
    exported = runner.invoke(main, ["export", str(run / "merged"), "--profile", "fp32",
                                    "--profile", "int8", "--threads", "1"])
    assert exported.exit_code == 0, exported.output
    assert exported.output.count("PASS") == 2
    int8 = read_manifest(run / "onnx-int8")
    assert int8["profile"]["name"] == "int8" and int8["source"]["model_dir_relative"] == "../merged"
    cosine = int8["verify"]["parity_texts"]["min_cosine"]
    assert int8["verify"]["gates"]["parity_min_cosine"] <= cosine < 1.0 - 1e-9  # not exact
    assert int8["verify"]["parity_texts"]["max_abs"] > 1e-5
    assert int8["source"]["merge_gate"]["merged_vs_adapter"]["min_cosine"] >= 0.99999
    int8_graph = onnx.load(str(run / "onnx-int8/model.onnx")).graph
    assert any(n.op_type == "MatMulIntegerToFloat" for n in int8_graph.node)  # row-wise int8
    verified = runner.invoke(main, ["verify", str(run / "onnx-int8"), "--threads", "1"])
    assert verified.exit_code == 0 and "PASS [int8]" in verified.output
    wrong_input = runner.invoke(main, ["export", str(run / "final")])  # a checkpoint, not merged
    assert wrong_input.exit_code == 2 and "no manifest" in wrong_input.output


def test_fp32_and_int8_from_one_export_above_the_external_data_limit(tmp_path, monkeypatch):
    """`export --profile fp32 --profile int8` of a model with external data (as at 7B width):
    the fp32 copy hard-links the scratch export, which onnx refuses to read again, so the int8
    transform must run first; both artifacts come back in the order asked for."""
    import toolchain.export.onnx_export as onnx_export
    from test_export_fixtures import make_model_dir
    from toolchain.export.pipeline import export_model_dir

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    model_dir = make_model_dir(tmp_path, "tiny-mistral", "m5")
    results = export_model_dir(model_dir, ["fp32", "int8"], threads=1, log=lambda line: None)
    assert [path.name for path, _ in results] == ["onnx-fp32", "onnx-int8"]
    for path, report in results:
        assert report["passed"] and read_manifest(path)["external_data"], report["failures"]


def test_external_data_is_one_file_and_failed_verify_writes_nothing(tmp_path, monkeypatch):
    """The > 2 GiB path (one model.onnx.data), forced on a tiny model, for int8 and fp16; a third
    profile whose gate cannot pass (int8 demanding exactness) fails and leaves no directory."""
    import toolchain.export.onnx_export as onnx_export
    from test_export_fixtures import make_model_dir
    from toolchain.export.pipeline import export_model_dir

    strict = tmp_path / "strict.yaml"
    profile = yaml.safe_load(load_profile("int8").path.read_text())
    profile["name"], profile["gates"]["parity_max_abs"] = "strict", 0.0
    strict.write_text(yaml.safe_dump(profile))
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    model_dir = make_model_dir(tmp_path, "tiny-llama", "m4")
    lines = []
    with pytest.raises(ToolchainError, match="onnx-strict: verification failed .nothing written.: "
                                             "parity .random shapes.: max .diff."):
        export_model_dir(model_dir, ["int8", "fp16", str(strict)], threads=1, log=lines.append)
    assert not (tmp_path / "onnx-strict").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "onnx-fp16", "onnx-int8",
                                                          "strict.yaml"]  # no temp dirs left
    summaries = [line for line in lines[1:] if not line.startswith("WARNING")]  # CPU notes
    assert [line.split()[1] for line in summaries] == ["PASS", "PASS", "FAIL"]
    for path in (tmp_path / "onnx-int8", tmp_path / "onnx-fp16"):
        manifest = read_manifest(path)
        report = manifest["verify"]
        assert report["passed"] and manifest["external_data"], report["failures"]
        names = sorted(p.name for p in path.iterdir() if p.is_file())  # + the model-dir files
        assert [n for n in names if n.startswith("model.onnx")] == ["model.onnx", "model.onnx.data"]
        # the graph file keeps structure only; the weights (embedding table, fp32 in every
        # profile since only MatMuls are quantised) sit in the one data file
        assert (path / "model.onnx").stat().st_size < 2**21
        assert (path / "model.onnx.data").stat().st_size > 0.9 * 49152 * 64 * (4 if "int8" in
                                                                               path.name else 2)
        assert report["attention_probe"]["observed"] == "bidirectional"


def test_profiles_are_data_files(tmp_path):
    assert {"fp32", "int8", "fp16"} <= set(list_profiles())
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.name == name and profile.path.read_text().startswith("# ")
    with pytest.raises(ToolchainError, match="profile 'fp8'; known: fp16, fp32, int8"):
        load_profile("fp8")
    bad = tmp_path / "bad.yaml"
    bad.write_text("precision: fp32\nquantisation: none\n")
    with pytest.raises(ToolchainError, match=r"bad.yaml: unknown field\(s\) \['quantisation'\]"):
        load_profile(bad)
    bad.write_text("precision: fp64\n")
    with pytest.raises(ToolchainError, match="bad.yaml: precision: 'fp64' not one of fp32, fp16"):
        load_profile(bad)


def test_cli_help_names_the_contract():
    runner = CliRunner()
    for command, needles in (("merge", ["RUN_DIR", "--out", "cosine gate"]),
                             ("export", ["MODEL_DIR", "--profile", "fp32, int8, fp16",
                                         "poolattn export runs/tiny-mistral/m5/merged"]),
                             ("verify", ["ARTIFACT", "--model-dir", "attention mode"])):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0
        for needle in needles:
            assert needle in " ".join(result.output.split()), (command, needle)


def test_verify_notices_a_changed_source_model(tmp_path_factory, tmp_path):
    """The artifact records its merged model's manifest hash; a re-merged source is reported."""
    run = cached_export(tmp_path_factory, "tiny-llama", "m3")
    shutil.copytree(run / "merged", tmp_path / "merged")
    shutil.copytree(run / "onnx-fp32", tmp_path / "onnx-fp32")
    fields = read_manifest(tmp_path / "merged")
    fields.pop("files")
    write_manifest(tmp_path / "merged", {**fields, "note": "merged again"})
    report = verify_artifact(tmp_path / "onnx-fp32", threads=1)
    assert not report["passed"]
    assert report["failures"] == [f"source model {tmp_path / 'onnx-fp32/../merged'} changed since "
                                  "this artifact was exported"]

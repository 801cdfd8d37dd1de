"""Benchmark stage through the real CLI on real artifacts: a tiny merged model and its ONNX
export (toolchain.export), opened by toolchain.embedder.Embedder."""

import json
import os

import pytest
import torch
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.export.pipeline import export_model_dir
from toolchain.modeling import build_embedding_model, save_embedding_model

FAST = ["--grid", "1x8,2x16", "--warmup", "1", "--repeats", "3", "--threads", "1"]
TIGHT = ("latency:\n  runtime: onnx\n  max_p95_ms: {2x16: 0.0001}\n"
         "head:\n  max_added_ms: {2x16: 0}\n"
         "load:\n  max_p99_ms: {20: 0.0001}\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/tiny-mistral/{m1: merged, m4: merged + onnx-fp32} (one export keeps this fast)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    for variant in ("m1", "m4"):
        merged = root / "tiny-mistral" / variant / "merged"
        save_embedding_model(build_embedding_model("tiny-mistral", variant), merged)
    export_model_dir(merged, ["fp32"], threads=1, log=lambda *_: None)
    return root


def invoke(args, monkeypatch, runs):
    monkeypatch.setenv("POOLATTN_RUNS", str(runs))
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_latency_on_ort_and_torch_with_split(runs, monkeypatch, tmp_path):
    out = tmp_path / "lat.json"
    art = runs / "tiny-mistral" / "m4" / "onnx-fp32"
    result = invoke(["bench", "latency", str(art), *FAST, "--out", str(out)], monkeypatch, runs)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    runtimes = {(r["runtime"], r["shape"]) for r in data["latency"]}
    assert runtimes == {(rt, s) for rt in ("onnx", "torch") for s in ("1x8", "2x16")}
    for row in data["latency"]:
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["threads"] == 1 and row["provider"] == "cpu" and row["variant"] == "m4"
        assert row["achieved_gflops"] > 0
    assert [r["variant"] for r in data["split"]] == ["m4", "m4"]
    assert all(r["head_p50_ms"] > 0 for r in data["split"])
    assert {r["shape"] for r in data["analytic"]} == {"mistral-7b", "qwen2-0.5b"}
    assert "| tiny-mistral/m4/onnx-fp32 | onnx | cpu | 1 | 2x16 |" in result.output
    # each runtime timed in a fresh process of its own, none of them this one
    pids = {rt: {r["pid"] for r in data["latency"] if r["runtime"] == rt}
            for rt in ("onnx", "torch")}
    assert all(len(p) == 1 for p in pids.values())
    assert pids["onnx"] != pids["torch"] and os.getpid() not in pids["onnx"] | pids["torch"]


def test_violated_budget_fails_with_table(runs, monkeypatch, tmp_path):
    budget = tmp_path / "tight.yaml"
    budget.write_text(TIGHT)
    art = runs / "tiny-mistral" / "m4" / "onnx-fp32"
    result = invoke(["bench", "latency", str(art), *FAST, "--no-torch", "--budget", str(budget)],
                    monkeypatch, runs)
    assert result.exit_code == 1, result.output
    assert "violation(s)" in result.output
    assert "| latency.max_p95_ms | tiny-mistral/m4/onnx-fp32 @ 2x16 |" in result.output
    assert "| head.max_added_ms | m4 @ 2x16 |" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("latency:\n  max_p95: {2x16: 1}\n")
    result = invoke(["bench", "latency", str(art), "--budget", str(bad)], monkeypatch, runs)
    assert result.exit_code == 2 and "bad.yaml:2:latency.max_p95: unknown field" in result.output


def test_bench_all_writes_report_and_gates(runs, monkeypatch, tmp_path):
    budget = tmp_path / "tight.yaml"
    budget.write_text(TIGHT)
    args = ["bench", "all", "--preset", "tiny-mistral", "--variants", "m1 m4", *FAST,
            "--no-quality", "--load-variants", "m4", "--load-seconds", "1",
            "--budget", str(budget)]
    result = invoke(args, monkeypatch, runs)
    assert result.exit_code == 1, result.output
    bench = runs / "tiny-mistral" / "bench"
    report = json.loads((bench / "report.json").read_text())
    assert report["budget"]["passed"] is False
    assert {r["model"] for r in report["latency"]} == {"tiny-mistral/m1/merged",
                                                       "tiny-mistral/m4/onnx-fp32",
                                                       "tiny-mistral/m4/merged"}
    assert {r["variant"] for r in report["split"]} == {"m1", "m4"}
    assert (bench / "latency_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Budget" in (bench / "report.md").read_text()
    # the short load level: m4's onnx-fp32 behind `poolattn serve`, every request answered
    # with Embedder.open's vectors, and the tight p99 limit caught
    (curve,) = report["load"]["curves"]
    assert curve["model"] == "tiny-mistral/m4/onnx-fp32" and curve["checked_vectors"]
    (level,) = curve["levels"]
    assert level["offered_rps"] == 20 and level["ok"] == level["sent"] > 0
    assert "load.max_p99_ms" in {v["check"] for v in report["budget"]["violations"]}
    assert "## Latency under load" in (bench / "report.md").read_text()
    assert (bench / "load_p99.png").read_bytes()[:4] == b"\x89PNG"
    missing = invoke(["bench", "all", "--preset", "nothing-here"], monkeypatch, runs)
    assert missing.exit_code == 2 and "no artifacts under" in missing.output


def test_compare_command(runs, monkeypatch, tmp_path):
    def entry(variant, scores):
        return {"variant": variant, "profile": "onnx-fp32",
                "rows": [{"task": f"t{i}", "category": "sts", "score": s, "main_score": "x",
                          "n": 5} for i, s in enumerate(scores)]}

    summary = {"models": {"m1/onnx-fp32": entry("m1", [0.5, 0.6, 0.7]),
                          "m5/onnx-fp32": entry("m5", [0.55, 0.6, 0.8])}}
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(summary))
    result = invoke(["compare", str(path), "--json", str(tmp_path / "c.json")], monkeypatch, runs)
    assert result.exit_code == 0, result.output
    assert "cannot reach p<0.05" in result.output
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [(r["category"], r["n"], r["n_nonzero"]) for r in rows] == [("sts", 3, 2),
                                                                       ("overall", 3, 2)]
    both = invoke(["compare", str(path), "--preset", "x"], monkeypatch, runs)
    assert both.exit_code == 2 and "not both" in both.output


def test_quality_writes_mteb_results_summary_and_gates(runs, monkeypatch, tmp_path):
    art = runs / "tiny-mistral" / "m4" / "onnx-fp32"
    floor = tmp_path / "floor.yaml"
    floor.write_text("quality:\n  min_score: {sts: 1.5}\n")  # Spearman cannot exceed 1
    args = ["bench", "quality", str(art), "--tasks", "LeeDocumentSTS,BBCNewsClustering",
            "--limit", "20", "--threads", "1", "--out", str(tmp_path / "q"), "--budget",
            str(floor)]
    result = invoke(args, monkeypatch, runs)
    assert result.exit_code == 1, result.output
    assert "| quality.min_score | tiny-mistral/m4/onnx-fp32 sts |" in result.output
    summary = json.loads((tmp_path / "q" / "quality.json").read_text())
    rows = summary["models"]["tiny-mistral/m4/onnx-fp32"]["rows"]
    assert [(r["task"], r["category"]) for r in rows] == [("LeeDocumentSTS", "sts"),
                                                          ("BBCNewsClustering", "clustering")]
    assert all(-1 <= r["score"] <= 1 for r in rows)
    mteb_dir = tmp_path / "q" / "quality" / "tiny-mistral" / "m4" / "onnx-fp32"
    mteb_files = list(mteb_dir.rglob("LeeDocumentSTS.json"))
    assert len(mteb_files) == 1 and "scores" in json.loads(mteb_files[0].read_text())


def test_bench_all_evaluates_baselines_beside_variants(runs, monkeypatch, tmp_path):
    from toolchain.baselines import build_baseline

    build_baseline("tiny-mistral", "untrained-mean",
                   out=runs / "tiny-mistral" / "untrained-mean" / "merged", log=lambda *_: None)
    floor = tmp_path / "floor.yaml"
    floor.write_text("quality:\n  min_score: {sts: 1.5}\n")  # every model violates it
    out = tmp_path / "bench"
    args = ["bench", "all", "--preset", "tiny-mistral", "--variants", "m1 m4", "--grid", "1x8",
            "--warmup", "0", "--repeats", "1", "--threads", "1", "--tasks", "LeeDocumentSTS",
            "--limit", "20", "--out", str(out), "--budget", str(floor)]
    missing = invoke(args + ["--baselines", "minilm-peer"], monkeypatch, runs)
    assert missing.exit_code == 2 and "poolattn baseline --preset tiny-mistral" in missing.output
    result = invoke(args, monkeypatch, runs)  # --baselines auto
    assert result.exit_code == 1, result.output
    report = json.loads((out / "report.json").read_text())
    quality = report["quality"]
    assert list(quality) == ["tiny-mistral/m1/merged", "tiny-mistral/m4/onnx-fp32",
                             "tiny-mistral/untrained-mean/merged"]
    assert quality["tiny-mistral/untrained-mean/merged"]["role"] == "untrained"
    assert report["settings"]["baselines"] == ["untrained-mean"]
    assert {(r["model"], r["baseline"]) for r in report["compare"]} == {
        ("tiny-mistral/m4/onnx-fp32", "tiny-mistral/m1/merged"),
        ("tiny-mistral/m1/merged", "tiny-mistral/untrained-mean/merged"),
        ("tiny-mistral/m4/onnx-fp32", "tiny-mistral/untrained-mean/merged")}
    # latency, budget and rollout advice hold the variants only
    assert all("untrained" not in r["model"] for r in report["latency"])
    assert all("untrained" not in v["subject"] for v in report["budget"]["violations"])
    assert {v["variant"] for v in report["budget"]["violations"]} == {"m1", "m4"}
    assert all(p["variant"] != "untrained-mean" for p in report["family_points"])
    assert "vs m1 and the baselines" in (out / "report.md").read_text()
    # scored in parts: --no-quality reuses the output directory's quality.json for the report
    again = invoke(args + ["--no-quality"], monkeypatch, runs)
    assert again.exit_code == 1, again.output  # its quality floors still apply
    reused = json.loads((out / "report.json").read_text())["quality"]
    assert {m: e["rows"] for m, e in reused.items()} == {m: e["rows"] for m, e in quality.items()}


@pytest.mark.parametrize("args,expected", [
    (["bench", "latency", "--help"], ["--grid", "--torch / --no-torch", "--budget", "Examples"]),
    (["bench", "all", "--help"], ["--preset", "--limit", "make bench"]),
    (["compare", "--help"], ["Wilcoxon", "--preset", "--baseline", "--exclude-task", "--peer"]),
    (["bench", "quality", "--help"], ["--label", "--merge", "--shards"]),
    (["bench", "load", "--help"], ["--rates", "--artifact", "--url", "Poisson", "--budget"]),
    (["serve", "--help"], ["/v1/embeddings", "/embed", "--token-budget", "--max-texts"]),
    (["baseline", "--help"], ["--preset", "untrained-mean", "minilm-peer"]),
])
def test_help_texts(args, expected):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    for text in expected:
        assert text in result.output

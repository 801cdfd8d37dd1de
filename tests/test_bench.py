"""Benchmark stage, library level: latency harness, cost split, budgets, paired tests, report."""

import json

import numpy as np
import pytest
import torch

from toolchain.bench.budget import check_budget, format_violations, load_budget
from toolchain.bench.compare import compare_models, min_attainable_p, paired_test
from toolchain.bench.latency import (make_inputs, ort_matmul_limit, parse_grid, percentiles,
                                     time_callable, time_interleaved, time_runner)
from toolchain.bench.report import family_of, write_report
from toolchain.bench.split import analytic_table, cost_split
from toolchain.errors import ToolchainError
from toolchain.modeling import VARIANTS, build_embedding_model
from toolchain.modeling.pooling import head_macs
from toolchain.modeling.shapes import MODEL_SHAPES, backbone_macs
from toolchain.paths import project_root

SHAPES = [(1, 8), (2, 24)]


class TorchRunner:
    """The harness's Runner protocol over a real EmbeddingModel (what Embedder.kind torch is)."""

    kind, provider = "torch", "cpu"

    def __init__(self, model):
        self.model, self.name, self.threads = model, f"{model.variant.name}/eager", 1
        self.manifest = {"variant": model.variant.name, "pooling": model.variant.pooling,
                         "attention": model.variant.attention}

    def tokenize(self, texts):
        return {k: v.numpy() for k, v in self.model.tokenizer(texts).items()}

    @torch.no_grad()
    def run(self, input_ids, attention_mask):
        return self.model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)  # the CPU is shared: one thread keeps timings from collapsing
    return {v: build_embedding_model("tiny-mistral", v, verify=False) for v in ("m1", "m3", "m4")}


@pytest.mark.parametrize("threads", [None, 1])  # None: ORT's default, as `bench all` passes it
def test_ort_matmul_limit_is_the_best_shape(threads):
    """The limit is the fastest single-MatMul graph's rate, each rate 2mkn / best time."""
    shapes = ((64, 32, 48), (256, 128, 128))
    limit = ort_matmul_limit(threads, shapes=shapes, repeats=2)
    rows = limit["shapes"]
    assert [(r["m"], r["k"], r["n"]) for r in rows] == list(shapes)
    for row in rows:
        assert row["gflops"] == pytest.approx(2 * row["m"] * row["k"] * row["n"]
                                              / row["best_ms"] / 1e6)
    assert limit["gflops"] == max(r["gflops"] for r in rows) > 0


def test_parse_grid():
    assert parse_grid("1x32, 8x128,32x512") == [(1, 32), (8, 128), (32, 512)]
    for bad in ("8*128", "0x16", "", "8x"):
        with pytest.raises(ToolchainError, match="grid"):
            parse_grid(bad)


def test_inputs_are_real_tokens_with_eos_last(models):
    runner = TorchRunner(models["m1"])
    ids, mask = make_inputs(runner, 3, 40)
    assert ids.shape == mask.shape == (3, 40) and ids.dtype == np.int64 and mask.all()
    assert (ids[:, -1] == models["m1"].tokenizer.eos_token_id).all()
    assert len(np.unique(ids)) > 10  # tiled real text, not a constant


def test_latency_percentiles_sane_and_ordered(models):
    rows = time_runner(TorchRunner(models["m3"]), SHAPES, warmup=1, repeats=7)
    assert [r["shape"] for r in rows] == ["1x8", "2x24"]
    for row in rows:
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["repeats"] == 7 and row["runtime"] == "torch" and row["threads"] == 1
        assert row["texts_per_s"] == pytest.approx(row["batch"] / (row["p50_ms"] / 1e3))
        assert row["tokens_per_s"] == pytest.approx(row["texts_per_s"] * row["seq_len"])
        assert row["variant"] == "m3" and row["provider"] == "cpu"


def test_time_callable_respects_time_cap():
    samples = time_callable(lambda: sum(range(20000)), warmup=0, repeats=10_000,
                            max_seconds=0.05, min_repeats=3)
    assert 3 <= len(samples) < 10_000
    with pytest.raises(ToolchainError):
        percentiles([])
    calls = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up each, then alternating rounds
    assert [len(v) for v in samples.values()] == [3, 3]


def test_cost_split_separates_head_from_backbone(models):
    rows = {v: cost_split(models[v], SHAPES, warmup=1, repeats=5) for v in ("m1", "m4")}
    for variant, per in rows.items():
        for row in per:
            assert row["backbone_p50_ms"] > 0 and row["head_p50_ms"] > 0
            assert row["eos_last_p50_ms"] > 0
            assert row["added_ms"] == pytest.approx(row["head_p50_ms"] - row["eos_last_p50_ms"])
    m4 = rows["m4"][-1]
    # m4's Perceiver head over all tokens does real work; m1 *is* eos_last (added ~ 0).
    assert m4["head_p50_ms"] > 2 * m4["eos_last_p50_ms"]
    expected = head_macs(models["m4"].head_config, 24)["total"]
    assert m4["head_macs_per_text"] == expected
    assert rows["m1"][-1]["analytic_head_pct"] == 0.0


def test_analytic_table_uses_named_shapes():
    rows = analytic_table([VARIANTS["m5"]], shapes=["mistral-7b"], seq_lens=[128])
    paper = next(r for r in rows if r["size"] == "paper")
    compact = next(r for r in rows if r["size"] == "compact")
    assert paper["backbone_macs"] == backbone_macs(MODEL_SHAPES["mistral-7b"], 128)
    assert paper["head_gflop_per_text"] == pytest.approx(2 * paper["per_text"] / 1e9)
    assert compact["head_pct"] < 5 < paper["head_pct"]


def test_default_budget_loads_and_flags_a_tight_one(tmp_path, models):
    budget = load_budget(project_root() / "benchmarks" / "budgets" / "default.yaml")
    assert {"latency", "head", "analytic"} <= set(budget.data)
    rows = time_runner(TorchRunner(models["m4"]), [(2, 24)], warmup=1, repeats=3)
    split = cost_split(models["m4"], [(2, 24)], warmup=1, repeats=3)
    tight = tmp_path / "tight.yaml"
    tight.write_text("latency:\n  runtime: any\n  max_p95_ms: {2x24: 0.0001}\n"
                     "head:\n  max_added_ms: {2x24: 0.0}\n"
                     "analytic:\n  size: paper\n  max_head_pct: {mistral-7b: 5}\n")
    violations = check_budget(load_budget(tight), rows, split, None, [VARIANTS["m4"]])
    assert [v["check"] for v in violations] == ["latency.max_p95_ms", "head.max_added_ms",
                                                "analytic.max_head_pct"]
    assert "| latency.max_p95_ms | m4/eager @ 2x24 |" in format_violations(violations)
    loose = tmp_path / "loose.yaml"
    loose.write_text("latency:\n  max_p95_ms: {2x24: 1.0e+6}\nanalytic:\n  max_head_pct: "
                     "{mistral-7b: 5}\n")
    assert check_budget(load_budget(loose), rows, split, None, [VARIANTS["m4"]]) == []


@pytest.mark.parametrize("text,match", [
    ("latency:\n  max_p95_ms: {8x128: fast}\n", r"bad.yaml:2:latency.max_p95_ms.8x128: limit"),
    ("head:\n  max_added_ms: {}\n  speed: 3\n", r"bad.yaml:3:head.speed: unknown field"),
    ("quality: {min_score: {STS: 0.1}}\nextra: 1\n", r"bad.yaml:2:extra: unknown section"),
    ("latency: [unclosed\n", r"bad.yaml:\d+: invalid YAML"),
])
def test_bad_budget_names_file_line_field(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ToolchainError, match=match):
        load_budget(tmp_path / "bad.yaml")


def test_paired_test_small_n_zero_and_ties():
    small = paired_test([0.01, 0.02, 0.03, -0.01, 0.05])
    assert small["p"] is None and small["statistic"] is not None
    assert "cannot reach p<0.05" in small["note"] and min_attainable_p(5) == 0.0625
    zeros = paired_test([0.0] * 7)
    assert zeros["p"] is None and zeros["mean_delta"] == 0.0 and "all paired" in zeros["note"]
    # 8 pairs, one zero (dropped) and ties among |d|: 7 non-zero, permutation p-value.
    tied = paired_test([0.02, 0.02, -0.02, 0.03, 0.03, 0.04, 0.05, 0.0])
    assert tied["n"] == 8 and tied["n_nonzero"] == 7 and tied["n_ties"] == 3
    assert tied["method"] == "permutation" and 0 < tied["p"] <= 1
    clear = paired_test([0.01 * (i + 1) for i in range(8)])
    assert clear["method"] == "exact" and clear["p"] == pytest.approx(2 / 2 ** 8)
    assert clear["significant"] and clear["statistic"] == 0.0
    assert paired_test([])["note"] == "no tasks in common with the baseline"


def quality_entry(variant, scores, profile="onnx-fp32"):
    rows = [{"task": task, "category": cat, "main_score": "m", "score": s, "n": 10}
            for (task, cat), s in scores.items()]
    return {"variant": variant, "profile": profile, "rows": rows}


TASKS = [(f"sts{i}", "STS") for i in range(6)] + [(f"clu{i}", "Clustering") for i in range(3)]


def test_compare_models_per_category_and_overall():
    base = {t: 0.5 + 0.01 * i for i, t in enumerate(TASKS)}
    better_sts = {t: s + (0.03 + 0.001 * i if t[1] == "STS" else -0.01)
                  for i, (t, s) in enumerate(base.items())}
    quality = {"m1/onnx-fp32": quality_entry("m1", base),
               "m5/onnx-fp32": quality_entry("m5", better_sts),
               "m2/onnx-fp32": quality_entry("m2", dict(base))}
    rows = {(r["variant"], r["category"]): r for r in compare_models(quality)}
    sts = rows[("m5", "STS")]
    assert sts["n"] == 6 and sts["p"] == pytest.approx(0.03125) and sts["significant"]
    assert sts["mean_delta"] == pytest.approx(0.0325)
    assert rows[("m5", "Clustering")]["p"] is None  # n = 3
    assert rows[("m5", "overall")]["n"] == 9
    assert rows[("m2", "overall")]["note"].startswith("all paired differences are zero")
    with pytest.raises(ToolchainError, match="no results for baseline 'm1'"):
        compare_models({"m5/onnx-fp32": quality["m5/onnx-fp32"]})


def test_report_and_plots_written(tmp_path, models):
    latency = (time_runner(TorchRunner(models["m1"]), SHAPES, 1, 3)
               + time_runner(TorchRunner(models["m4"]), SHAPES, 1, 3))
    split = cost_split(models["m1"], SHAPES, 1, 3) + cost_split(models["m4"], SHAPES, 1, 3)
    base = {t: 0.5 + 0.01 * i for i, t in enumerate(TASKS)}
    quality = {"m1/onnx-fp32": quality_entry("m1", base),
               "m4/onnx-fp32": quality_entry("m4", {t: s + (0.02 + 0.001 * i) *
                                                    (1 if t[1] == "STS" else -1)
                                                    for i, (t, s) in enumerate(base.items())})}
    report = {"preset": "tiny-mistral", "machine": {"cpu": "x", "cores": 2, "torch": "t",
                                                    "onnxruntime": "o"},
              "settings": {"grid": "1x8,2x24", "warmup": 1, "repeats": 3, "threads": 1},
              "latency": latency, "split": split, "split_method": "torch",
              "analytic": analytic_table([VARIANTS["m4"]], seq_lens=[24]),
              "quality": quality, "compare": compare_models(quality),
              "budget": {"file": "b.yaml", "violations": [], "passed": True}}
    write_report(report, tmp_path / "bench")
    out = tmp_path / "bench"
    for name in ("latency_vs_length.png", "quality_vs_latency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "report.json").read_text())
    assert data["recommendations"]["search/STS"].startswith("roll out m4")
    assert data["recommendations"]["clustering/classification"].startswith("keep m1")
    markdown = (out / "report.md").read_text()
    for heading in ("## Rollout recommendation", "**search/STS**", "## Cost split",
                    "## Paired Wilcoxon", "![latency_vs_length](latency_vs_length.png)"):
        assert heading in markdown
    assert family_of("Retrieval") == "search/STS" and family_of("Classification") == \
        "clustering/classification"

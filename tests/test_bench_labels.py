"""Run labels of the quality bench (collisions refused before anything is evaluated, results
files combined) and comparisons of the trained variants against several baselines."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from toolchain.atomic import write_manifest
from toolchain.bench.against import compare_against, peer_gaps, peer_reference
from toolchain.bench.artifacts import check_labels, inspect_artifact, result_dir
from toolchain.bench.compare import EXCLUDED, compare_models, load_quality
from toolchain.bench.quality import evaluate_artifacts, overall_means
from toolchain.cli import main
from toolchain.errors import ToolchainError


def fake_model_dir(path, variant="m1"):
    (path / "backbone").mkdir(parents=True)
    (path / "backbone" / "config.json").write_text("{}")
    write_manifest(path, {"kind": "embedding_model", "variant": variant})
    return path


class FakeSuite:
    calls: list = []

    @staticmethod
    def evaluate(embedder, **kwargs):
        FakeSuite.calls.append(kwargs["output_dir"])
        return [{"task": "t", "category": "sts", "main_score": "x", "score": 0.5, "n": 1}]


@pytest.fixture
def fake_eval(monkeypatch):
    import toolchain.bench.quality as quality

    class Tok:
        max_length = 8

    class Emb:
        tokenizer = Tok()

    FakeSuite.calls = []
    monkeypatch.setattr(quality, "_tasks_module", lambda: FakeSuite)
    monkeypatch.setattr(quality, "open_artifact", lambda *a, **k: Emb())
    return FakeSuite


def test_label_collision_refused_before_any_evaluation(tmp_path, fake_eval):
    a = inspect_artifact(fake_model_dir(tmp_path / "a" / "p" / "m1" / "merged"))
    b = inspect_artifact(fake_model_dir(tmp_path / "b" / "p" / "m1" / "merged"))
    assert a.label == b.label == "p/m1/merged"
    with pytest.raises(ToolchainError, match="label collision") as err:
        evaluate_artifacts([a, b], tmp_path / "out")
    assert str(a.path) in str(err.value) and str(b.path) in str(err.value)
    assert fake_eval.calls == [] and not (tmp_path / "out" / "quality.json").exists()
    # two labels landing in one result folder collide too
    with pytest.raises(ToolchainError, match="label collision"):
        check_labels([a.labelled("x:y"), b.labelled("x-y")])
    summary = evaluate_artifacts([a.labelled("a-m1"), b.labelled("b-m1")], tmp_path / "out")
    assert list(summary["models"]) == ["a-m1", "b-m1"]
    assert fake_eval.calls == [tmp_path / "out" / "quality" / "a-m1",
                               tmp_path / "out" / "quality" / "b-m1"]
    # --merge keeps earlier labels; the same label for another artifact is refused up front
    c = inspect_artifact(fake_model_dir(tmp_path / "p" / "untrained-mean" / "merged",
                                        "untrained-mean"))
    merged = evaluate_artifacts([c], tmp_path / "out", merge=True)
    assert list(merged["models"]) == ["a-m1", "b-m1", "p/untrained-mean/merged"]
    with pytest.raises(ToolchainError, match="already in the results"):
        evaluate_artifacts([c.labelled("a-m1")], tmp_path / "out", merge=True)
    with pytest.raises(ToolchainError, match="would not be comparable"):
        evaluate_artifacts([c], tmp_path / "out", limit=5, merge=True)
    assert len(fake_eval.calls) == 3
    assert result_dir("p/m1/onnx-fp32").as_posix() == "p/m1/onnx-fp32"
    assert ".." not in result_dir("../x").parts


def test_quality_cli_labels(tmp_path, fake_eval, monkeypatch):
    a = fake_model_dir(tmp_path / "a" / "p" / "m1" / "merged")
    b = fake_model_dir(tmp_path / "b" / "p" / "m1" / "merged")
    run = CliRunner().invoke
    out = tmp_path / "q"
    result = run(main, ["bench", "quality", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 2 and "label collision" in result.output
    assert str(a) in result.output and str(b) in result.output and fake_eval.calls == []
    result = run(main, ["bench", "quality", str(a), str(b), "--label", "x", "--out", str(out)])
    assert result.exit_code == 2 and "one per artifact" in result.output
    result = run(main, ["bench", "quality", str(a), str(b), "--label", "run-a", "--label",
                        "run-b", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "quality.json").read_text())["models"]) == {"run-a", "run-b"}


def entry(run, scores, role="variant", preset="p", profile="onnx-fp32", limit=None):
    rows = [{"task": t, "category": c, "main_score": "m", "score": s, "n": 5,
             "shard_scores": [s + 0.001 * k for k in range(3)]}
            for (t, c), s in scores.items()]
    return {"variant": run, "run": run, "role": role, "preset": preset, "profile": profile,
            "limit": limit, "shards": 3, "rows": rows}


TASKS = [("WordNetDefinitionRetrieval", "retrieval"), ("LeeDocumentSTS", "sts")] + \
    [(f"Clu{i}", "clustering") for i in range(5)]


def study_quality():
    base = {t: 0.3 + 0.01 * i for i, t in enumerate(TASKS)}
    return {"p/m1/onnx-fp32": entry("m1", base),
            "p/m5/onnx-fp32": entry("m5", {t: s + 0.05 + 0.01 * i
                                           for i, (t, s) in enumerate(base.items())}),
            "p/untrained-mean/merged": entry("untrained-mean", {t: s + 0.02 for t, s in
                                                                base.items()},
                                             "untrained", profile="merged"),
            "p/minilm-peer/model": entry("minilm-peer", {t: 0.6 for t in base}, "peer",
                                         profile="model")}


def test_compare_against_several_baselines_with_exclusion_and_peer_gaps():
    quality = study_quality()
    tables = compare_against(quality, ["m1", "untrained-mean", "minilm-peer"], "shard",
                             ["WordNetDefinitionRetrieval"])
    assert list(tables) == ["m1", "untrained-mean", "minilm-peer"]
    # only trained runs are tested; baselines are references
    assert {r["model"] for r in tables["m1"]} == {"p/m5/onnx-fp32"}
    assert {r["model"] for r in tables["minilm-peer"]} == {"p/m1/onnx-fp32", "p/m5/onnx-fp32"}
    rows = {(r["model"], r["category"]): r for r in tables["untrained-mean"]}
    assert rows[("p/m5/onnx-fp32", "overall")]["n"] == 21
    excl = rows[("p/m5/onnx-fp32", EXCLUDED)]
    assert excl["n"] == 18 and excl["baseline"] == "p/untrained-mean/merged"
    assert excl["significant"] and excl["mean_delta"] == pytest.approx(0.03 + 0.035)
    assert ("p/m5/onnx-fp32", EXCLUDED) not in {(r["model"], r["category"])
                                                for r in compare_models(quality)}
    with pytest.raises(ToolchainError, match="no results for baseline 'untrained-eos'"):
        compare_against(quality, ["untrained-eos"])
    peers = peer_reference(quality)
    assert peers == ["p/minilm-peer/model"]
    gaps = {(g["model"], g["task"]): g for g in peer_gaps(quality, peers,
                                                         ["WordNetDefinitionRetrieval"])}
    wn = gaps[("p/m1/onnx-fp32", "WordNetDefinitionRetrieval")]
    assert (wn["score"], wn["peer_score"]) == (pytest.approx(0.3), 0.6)
    assert wn["gap"] == pytest.approx(-0.3)
    assert gaps[("p/m1/onnx-fp32", EXCLUDED)]["score"] == pytest.approx(
        np.mean([0.3 + 0.01 * i for i in range(1, 7)]))
    means = {r["model"]: r for r in overall_means(quality, ["WordNetDefinitionRetrieval"])}
    assert means["p/minilm-peer/model"]["tasks_kept"] == 6


def test_load_quality_combines_files_and_refuses_collisions(tmp_path):
    quality = study_quality()
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    models = list(quality.items())
    one.write_text(json.dumps({"limit": 100, "shards": 3, "models": dict(models[:2])}))
    two.write_text(json.dumps({"limit": 100, "shards": 3, "models": dict(models[2:])}))
    merged = load_quality([one, two])
    assert list(merged) == list(quality) and merged["p/m1/onnx-fp32"]["results_file"] == str(one)
    assert len(compare_against(merged, ["m1", "minilm-peer"])["minilm-peer"]) > 0
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"models": {"p/m1/onnx-fp32": models[0][1]}}))
    with pytest.raises(ToolchainError, match="label collision") as err:
        load_quality([one, clash])
    assert str(one) in str(err.value) and str(clash) in str(err.value)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"limit": 50, "shards": 3, "models": {
        "q/m1/onnx-fp32": entry("m1", {t: 0.1 for t in TASKS}, preset="q", limit=50)}}))
    mixed = load_quality([two, other])
    with pytest.raises(ToolchainError, match="limit"):
        compare_models(mixed, "minilm-peer")


def test_compare_cli_several_baselines(tmp_path):
    path = tmp_path / "quality.json"
    path.write_text(json.dumps({"limit": None, "shards": 3, "models": study_quality()}))
    result = CliRunner().invoke(main, [
        "compare", str(path), "--unit", "shard", "--baseline", "m1", "--baseline",
        "untrained-mean", "--baseline", "minilm-peer", "--json", str(tmp_path / "rows.json")])
    assert result.exit_code == 0, result.output
    for heading in ("vs m1, one pair per shard", "vs untrained-mean, one pair per shard",
                    "vs minilm-peer, one pair per shard", "overall excl. in-domain",
                    "## Gap to the peer (p/minilm-peer/model)",
                    "| p/m5/onnx-fp32 | WordNetDefinitionRetrieval | retrieval |",
                    "Converged: mean loss over the last third"):
        assert heading in result.output
    # these results name no training runs on disk: each variant's convergence is unknown,
    # never assumed
    assert "| m5 | - | - | - | - | - | - | - | unknown (no metrics.jsonl found) |" in result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {r["baseline"] for r in rows} == {"p/m1/onnx-fp32", "p/untrained-mean/merged",
                                             "p/minilm-peer/model"}
    bad = CliRunner().invoke(main, ["compare", str(path), "--baseline", "untrained-eos"])
    assert bad.exit_code == 2 and "no results for baseline 'untrained-eos'" in bad.output

"""Shard-paired Wilcoxon tests and the agreement table against a paper's directions."""

import json

import pytest
from click.testing import CliRunner

from toolchain.bench.compare import compare_models
from toolchain.bench.directions import (PaperFinding, agreement_counts, directions_table,
                                        load_directions, study_markdown, verdict)
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.paths import project_root

PAPER_FILE = project_root() / "benchmarks" / "study" / "paper_directions.yaml"
TASKS = [("Lee", "sts"), ("WordNet", "retrieval"), ("BBC", "classification"),
         ("RT", "classification")]


def entry(variant, shifts, shards=5):
    """Quality rows whose shard scores are a base curve plus ``shifts[category]`` (+ jitter so
    no two pairs tie); the task score is the shard mean."""
    rows = []
    for t, (task, category) in enumerate(TASKS):
        shard = [0.4 + 0.01 * t + 0.002 * i + shifts.get(category, 0.0) * (1 + 0.1 * i + 0.01 * t)
                 for i in range(shards)]
        rows.append({"task": task, "category": category, "main_score": "m",
                     "score": sum(shard) / shards, "n": 50, "shard_scores": shard})
    return {"variant": variant, "profile": "onnx-fp32", "rows": rows}


@pytest.fixture
def quality():
    return {"m1/onnx-fp32": entry("m1", {}),
            "m5/onnx-fp32": entry("m5", {"sts": 0.02, "classification": -0.01}),
            "m4/onnx-fp32": entry("m4", {"sts": -0.03})}


def test_shard_pairs_give_power_where_task_pairs_cannot(quality):
    by_task = {(r["variant"], r["category"]): r for r in compare_models(quality, unit="task")}
    by_shard = {(r["variant"], r["category"]): r for r in compare_models(quality, unit="shard")}
    assert by_task[("m5", "sts")]["n"] == 1 and by_task[("m5", "sts")]["p"] is None
    sts = by_shard[("m5", "sts")]
    assert (sts["n"], sts["unit"]) == (5, "shard") and sts["p"] is None  # 5 pairs: p >= 0.0625
    cls = by_shard[("m5", "classification")]  # 2 tasks x 5 shards, all lower
    assert cls["n"] == 10 and cls["significant"] and cls["p"] == pytest.approx(2 / 2 ** 10)
    assert cls["mean_delta"] < 0 and by_shard[("m5", "overall")]["n"] == 20
    assert by_task[("m5", "overall")]["mean_delta"] == pytest.approx(
        by_shard[("m5", "overall")]["mean_delta"])  # equal shard sizes: the same mean


def test_shard_pairs_need_shard_scores(quality):
    del quality["m4/onnx-fp32"]["rows"][0]["shard_scores"]
    with pytest.raises(ToolchainError, match=r"m4/onnx-fp32: task Lee has no per-shard.*--shards"):
        compare_models(quality, unit="shard")
    with pytest.raises(ToolchainError, match="unknown pairing unit"):
        compare_models(quality, unit="fold")


@pytest.mark.parametrize("delta,significant,paper,expected", [
    (0.02, True, PaperFinding(0.01, True), "agrees, significant"),
    (0.02, False, PaperFinding(0.01, True), "same direction, not significant"),
    (-0.02, True, PaperFinding(0.01, True), "contradicts, significant"),
    (-0.02, False, PaperFinding(0.01, True), "opposite direction, not significant"),
    (0.0, False, PaperFinding(0.01, True), "no difference"),
    (0.02, True, None, "significant where the paper lists no delta"),
    (0.02, False, None, "paper lists none"),
])
def test_verdicts(delta, significant, paper, expected):
    assert verdict({"mean_delta": delta, "significant": significant}, paper) == expected
    assert verdict(None, paper) == "no result"


def test_shipped_paper_file_and_agreement_table(quality):
    paper = load_directions(PAPER_FILE)
    assert paper.baseline == "m1" and paper.deltas["m5"]["retrieval"] == PaperFinding(0.0226, True)
    assert paper.deltas["m4"]["clustering"].delta < 0
    rows = {u: compare_models(quality, unit=u) for u in ("task", "shard")}
    table = {(r["variant"], r["category"]): r for r in directions_table(rows, paper)}
    assert table[("m5", "classification")]["verdicts"] == {
        "task": "same direction, not significant", "shard": "agrees, significant"}
    assert table[("m4", "sts")]["verdicts"]["shard"] == "opposite direction, not significant"
    assert table[("m5", "clustering")]["verdicts"]["task"] == "no result"  # not in our suite
    assert table[("m2", "sts")]["ours"] == {}  # in the paper only
    counts = agreement_counts(list(table.values()), "shard")
    assert sum(counts.values()) == 8 and counts["agrees, significant"] == 1


def test_study_markdown_has_scores_tests_and_agreement(quality):
    text = study_markdown(quality, load_directions(PAPER_FILE), "q.json")
    for heading in ("## Scores per task", "one pair per task", "one pair per shard",
                    "## Against the paper's directions"):
        assert heading in text
    assert "| m5 | classification | -0.0143* | " in text
    no_shards = {m: {**e, "rows": [{k: v for k, v in r.items() if k != "shard_scores"}
                                   for r in e["rows"]]} for m, e in quality.items()}
    assert "one pair per shard" not in study_markdown(no_shards, load_directions(PAPER_FILE))


@pytest.mark.parametrize("text,match", [
    ("source: x\nbaseline: m1\n", "missing field 'deltas'"),
    ("source: x\nbaseline: m1\ndeltas:\n  m5:\n    sts: {delta: high, significant: true}\n",
     r"deltas\.m5\.sts\.delta: must be a finite number"),
    ("source: x\nbaseline: m1\ndeltas:\n  m5:\n    sts: {delta: 0.1, significant: 1}\n",
     r"deltas\.m5\.sts\.significant"),
    ("source: x\nbaseline: m1\ndeltas:\n  m5: [1]\n", r"deltas\.m5: must map"),
    ("source: x\nbaseline: [m1\n", r"paper\.yaml:\d+: invalid YAML"),
])
def test_bad_paper_files_name_the_field(tmp_path, text, match):
    path = tmp_path / "paper.yaml"
    path.write_text(text)
    with pytest.raises(ToolchainError, match=match):
        load_directions(path)


def test_compare_cli_writes_the_study_record(quality, tmp_path):
    results = tmp_path / "quality.json"
    results.write_text(json.dumps({"models": quality}))
    out = tmp_path / "results" / "study.md"
    args = ["compare", str(results), "--unit", "shard", "--paper", str(PAPER_FILE),
            "--markdown", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| shards | 10 |" in result.output  # the printed table pairs by shard
    assert "## Against the paper's directions" in result.output
    assert out.read_text().startswith("Results: ") and not list(out.parent.glob(".*"))
    bad = CliRunner().invoke(main, ["compare", str(results), "--markdown", str(out)])
    assert bad.exit_code == 2 and "give --paper too" in bad.output
    other = CliRunner().invoke(main, ["compare", str(results), "--baseline", "m4", "--paper",
                                      str(PAPER_FILE)])
    assert other.exit_code == 2 and "the paper's baseline is 'm1'" in other.output


def test_study_record_reads_run_files_and_refuses_missing_ones(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "record", project_root() / "benchmarks" / "study" / "record.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    run = tmp_path / "m1"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "loss": 3.0 - 0.1 * i, "candidates": 24, "elapsed_s": 10.0 * i})
        + "\n" for i in range(6)))
    rows = record.training_rows(run)
    assert (rows["steps"], rows["first"], rows["candidates"]) == (6, 3.0, 24)
    assert rows["last_mean"] == pytest.approx(2.6) and rows["train_s"] == 50.0
    assert record.training_runs(run) == [run]
    for k, start in ((0, 3.0), (1, 4.0)):  # a soup's ingredients: one run per data seed
        seed_run = tmp_path / "m5" / "seeds" / f"d{k}"
        seed_run.mkdir(parents=True)
        (seed_run / "metrics.jsonl").write_text("".join(
            json.dumps({"step": i + 1, "loss": start - 0.5 * i, "source": "bible",
                        "elapsed_s": 1.0}) + "\n" for i in range(3)))
    runs = record.training_runs(tmp_path / "m5")
    assert [r.name for r in runs] == ["d0", "d1"]
    assert record.source_losses(runs) == {"bible": (3, 3.5, 2.5)}
    report = {"latency": [{"model": "m1/onnx-fp32", "shape": "8x128", "p50_ms": 5.0},
                          {"model": "m1/merged", "shape": "8x128", "p50_ms": 7.0},
                          {"model": "m1/merged", "shape": "1x32", "p50_ms": 1.0},
                          {"model": "p/m2/onnx-fp32", "variant": "m2", "profile": "onnx-fp32",
                           "shape": "8x128", "p50_ms": 6.0}]}
    assert record.latency_at(report, "8x128") == {"m1": {"onnx-fp32": 5.0, "merged": 7.0},
                                                  "m2": {"onnx-fp32": 6.0}}
    monkeypatch.setenv("POOLATTN_RUNS", str(tmp_path))
    assert record.main(["--preset", "nothing", "--out", str(tmp_path / "r.md")]) == 2
    assert "run `make study` first" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()

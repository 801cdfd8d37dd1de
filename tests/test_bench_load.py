"""`bench load` against a real server on loopback: Poisson arrivals, levels bounded in requests
and seconds, vectors checked, the server's batches reported; a server killed mid-run makes the
load generator report errors and return (no hang), and a restarted server serves again."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import TEXTS
from test_export_fixtures import cached_export, one_thread  # noqa: F401
from toolchain.bench.budget import check_budget, load_budget
from toolchain.bench.load import LoadSettings, arrival_offsets, read_texts, run_load, suite_texts
from toolchain.bench.load_runs import head_under_load, max_rate_within, reference_vectors
from toolchain.bench.plots import draw_p99_vs_rate
from toolchain.errors import ToolchainError
from toolchain.serve.process import ServerProcess


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return cached_export(tmp_path_factory, "tiny-qwen2", "m5") / "onnx-fp32"


def test_poisson_arrivals_are_bounded_and_have_the_rate():
    rng = np.random.default_rng(0)
    offsets = arrival_offsets(50.0, 100_000, 200.0, rng)
    assert np.all(np.diff(offsets) > 0) and offsets[-1] < 200.0
    assert len(offsets) / 200.0 == pytest.approx(50.0, rel=0.03)
    gaps = np.diff(offsets)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    assert len(arrival_offsets(50.0, 7, 200.0, rng)) == 7
    assert arrival_offsets(1.0, 100, 0.5, np.random.default_rng(1)).max(initial=0) < 0.5


def test_texts_sources(tmp_path):
    texts = suite_texts()
    assert len(texts) > 1000 and all(isinstance(t, str) for t in texts)
    lengths = [len(t) for t in texts]
    assert max(lengths) > 5 * min(lengths) + 100  # a length distribution, not one length
    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ToolchainError, match=r"texts.jsonl:2:text"):
        read_texts(bad)
    plain = tmp_path / "texts.txt"
    plain.write_text("one\n\ntwo\n")
    assert read_texts(plain) == ["one", "two"]


def curve(variant, levels):
    return {"model": f"x/{variant}/onnx-fp32", "variant": variant, "profile": "onnx-fp32",
            "levels": levels}


def level(rate, p50, p99, ok=10, sent=10):
    return {"offered_rps": rate, "p50_ms": p50, "p99_ms": p99, "ok": ok, "sent": sent}


def test_summaries_budget_and_plot(tmp_path):
    m1 = curve("m1", [level(10, 5, 9), level(20, 6, 12), level(40, 30, 400, ok=8)])
    m5 = curve("m5", [level(10, 7, 11), level(20, 9, 30), level(40, 50, 900)])
    assert max_rate_within(m1["levels"], 20) == 20  # 40 req/s lost requests
    assert max_rate_within(m5["levels"], 20) == 10
    assert max_rate_within(m5["levels"], 1) is None
    split = [{"variant": "m5", "shape": "8x128", "batch": 8, "seq_len": 128, "added_ms": 0.4},
             {"variant": "m5", "shape": "1x32", "batch": 1, "seq_len": 32, "added_ms": 0.1}]
    rows = head_under_load([m1, m5], split)
    assert [(r["offered_rps"], r["added_p50_ms"], r["added_p99_ms"]) for r in rows] == \
        [(10, 2, 2), (20, 3, 18), (40, 20, 500)]
    assert rows[0]["single_call_added_ms"] == 0.4 and rows[0]["single_call_shape"] == "8x128"
    path = tmp_path / "budget.yaml"
    path.write_text("load:\n  max_p99_ms:\n    20: 25\n    40: 10000\n")
    found = {(v["check"], v["subject"]) for v in check_budget(load_budget(path), load=[m1, m5])}
    assert found == {("load.max_p99_ms", "x/m5/onnx-fp32 @ 20 req/s"),
                     ("load.answered", "x/m1/onnx-fp32 @ 40 req/s")}
    path.write_text("load:\n  max_p99_ms:\n    20: fast\n")
    with pytest.raises(ToolchainError, match=r"budget.yaml:3:load.max_p99_ms.20"):
        load_budget(path)
    fig = draw_p99_vs_rate([m1, m5], p99_budget_ms=20)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["m5 onnx-fp32"].get_ydata()) == [11, 30, 900]
    assert "p99 budget 20 ms" in lines


def test_levels_then_a_killed_server_then_a_restarted_one(artifact, tmp_path):
    pool = TEXTS + [f"sentence {i} on topic {i % 3}" for i in range(12)]
    reference = reference_vectors(artifact, pool, threads=1)
    server = ServerProcess(artifact, options=["--threads", "1", "--max-wait-ms", "10"],
                           log=tmp_path / "server.log").start()
    try:
        settings = LoadSettings(rates=(20.0, 60.0), max_requests=40, max_seconds=2.0,
                                timeout_s=20.0, texts_per_request=2)
        levels = run_load(server.url, settings, pool, reference)
        assert [lv["offered_rps"] for lv in levels] == [20.0, 60.0]
        for lv in levels:
            assert lv["sent"] > 10 and lv["ok"] == lv["sent"] and lv["mismatched"] == 0
            assert lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"]
            assert sum(int(k) * v for k, v in lv["batch_requests"].items()) == lv["sent"]
        wrong = {t: -v for t, v in reference.items()}  # a checker that cannot pass
        spoiled = run_load(server.url, LoadSettings(rates=(20.0,), max_requests=5), pool, wrong)
        assert spoiled[0]["mismatched"] == spoiled[0]["sent"] > 0

        killer = threading.Timer(1.0, server.kill)
        killer.start()
        started = time.perf_counter()
        crashed = run_load(server.url, LoadSettings(rates=(20.0,), max_requests=80,
                                                    max_seconds=4.0, timeout_s=5.0), pool)
        killer.join()
        assert time.perf_counter() - started < 4.0 + 5.0 + 5.0  # window + timeout + slack
        lost = crashed[0]["errors"] + crashed[0]["timeouts"]
        assert lost > 0 and crashed[0]["ok"] + lost == crashed[0]["sent"]
        assert crashed[0]["error_kinds"]

        server.start()  # same port
        again = run_load(server.url, LoadSettings(rates=(20.0,), max_requests=10,
                                                  max_seconds=2.0), pool, reference)
        assert again[0]["ok"] == again[0]["sent"] > 0
    finally:
        server.stop()

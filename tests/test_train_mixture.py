"""Training mixtures: one source per batch, exact weighted shares, per-source instructions,
symmetric sources in both directions (never both in one batch), validation naming the field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from toolchain.data.training import format_query
from toolchain.errors import ToolchainError
from toolchain.train.config import TrainConfig
from toolchain.train.mixture import (MixturePlan, load_sources, parse_mixture,
                                     weighted_round_robin)


def write_source(path: Path, prefix: str, rows: int = 24) -> Path:
    lines = [json.dumps({"query": f"{prefix} query {i}", "positive": f"{prefix} answer {i}",
                         "negatives": [f"{prefix} other {i}"]}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def two_sources(tmp_path):
    return [{"name": "alpha", "data": str(write_source(tmp_path / "a.jsonl", "alpha")),
             "weight": 3, "instruction": "Find the alpha answer"},
            {"name": "beta", "data": str(write_source(tmp_path / "b.jsonl", "beta")),
             "weight": 1, "symmetric": True}]


def test_round_robin_gives_exact_interleaved_shares():
    order = weighted_round_robin([3, 1, 1], 50)
    assert Counter(order) == {0: 30, 1: 10, 2: 10}
    assert max(len(run) for run in "".join(map(str, order)).split("1")) <= 4  # interleaved


def test_each_batch_comes_from_one_source_with_its_instruction(two_sources):
    config = TrainConfig.from_dict({"mixture": two_sources})
    plan = MixturePlan(load_sources(config.sources()), batch_size=8, negatives_per_query=1, seed=0)
    names = [plan.source_name(i) for i in range(40)]
    assert Counter(names) == {"alpha": 30, "beta": 10}
    for step, name in enumerate(names):
        batch = plan.batch(step)
        texts = batch.queries + batch.positives + batch.negatives
        assert all(name in text for text in texts), (step, name)  # negatives: same domain
        if name == "alpha":
            assert all(q.startswith(format_query("", "Find the alpha answer")) for q in batch.queries)
    again = MixturePlan(load_sources(config.sources()), 8, 1, 0)
    assert again.batch(17) == plan.batch(17)  # a pure function of the step: exact resume


def test_symmetric_source_alternates_direction_never_mixing_them(two_sources):
    plan = MixturePlan(load_sources(TrainConfig.from_dict({"mixture": two_sources}).sources()),
                       8, 1, 0)
    beta_steps = [s for s in range(40) if plan.source_name(s) == "beta"]
    directions = []
    for step in beta_steps:
        batch = plan.batch(step)
        kinds = {"query" in q for q in batch.queries}
        assert len(kinds) == 1  # one direction per batch: a row's own query is never a candidate
        directions.append(kinds.pop())
        assert not any(q in batch.positives for q in batch.queries)
    assert directions[0::2] == [True] * len(directions[0::2])
    assert directions[1::2] == [False] * len(directions[1::2])


def test_repeated_queries_are_kept_once(tmp_path):
    path = tmp_path / "dup.jsonl"
    rows = [{"query": "same", "positive": f"sense {i}"} for i in range(3)] + \
           [{"query": f"q{i}", "positive": f"p{i}"} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [(_, kept)] = load_sources(parse_mixture([{"name": "d", "data": str(path)}], "m"))
    assert [r.query for r in kept].count("same") == 1 and len(kept) == 6


@pytest.mark.parametrize("item,match", [
    ({"name": "a", "data": "x.jsonl", "weight": 0}, r"mixture\[0\]\.weight: must be > 0"),
    ({"name": "a"}, "exactly one of 'data'"),
    ({"name": "a", "data": "x", "source": "y"}, "exactly one of 'data'"),
    ({"name": "a", "data": "x", "wieght": 2}, r"mixture\[0\]: unknown key"),
    ({"name": "a", "data": "x", "symmetric": "yes"}, r"mixture\[0\]\.symmetric: must be bool"),
    ({"data": "x"}, r"mixture\[0\]\.name: missing"),
])
def test_bad_mixture_names_the_field(item, match):
    with pytest.raises(ToolchainError, match=match):
        TrainConfig.from_dict({"mixture": [item]}, where="presets/p.yaml: train")


def test_missing_built_source_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLATTN_ASSETS", str(tmp_path))
    config = TrainConfig.from_dict({"mixture": [{"name": "deb", "source": "debian"}]})
    with pytest.raises(ToolchainError, match="poolattn data build-train --sources debian"):
        load_sources(config.sources())


def test_too_small_source_is_named(tmp_path):
    config = TrainConfig.from_dict({"mixture": [
        {"name": "tiny", "data": str(write_source(tmp_path / "t.jsonl", "t", rows=4))}]})
    with pytest.raises(ToolchainError, match="training source tiny"):
        MixturePlan(load_sources(config.sources()), 8, 1, 0)


def test_data_on_the_command_line_replaces_the_mixture(two_sources, tmp_path):
    config = TrainConfig.from_dict({"mixture": two_sources})
    single = config.with_overrides(data=str(tmp_path / "a.jsonl"))
    assert single.mixture is None and [s.name for s in single.sources()] == ["a"]
    assert [s.name for s in config.with_overrides(steps=3).sources()] == ["alpha", "beta"]

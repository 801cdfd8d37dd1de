"""Benchmark plots: lines tellable apart, significance marked with the suite's pairing."""

import pytest
from matplotlib.colors import to_rgba

from toolchain.bench.plots import (draw_latency_vs_length, draw_quality_vs_latency,
                                   latency_line_styles, plot_quality_vs_latency)
from toolchain.bench.report import family_points, pairing_unit

VARIANTS = ("m1", "m2", "m3", "m4", "m5", "untrained-mean", "minilm-peer")
PROFILES = {"onnx-fp32": "onnx", "onnx-int8": "onnx", "onnx-fp16": "onnx", "merged": "torch"}
LENGTHS = (32, 128, 512)


def latency_rows():
    return [{"model": f"p/{v}/{profile}", "variant": v, "profile": profile, "runtime": runtime,
             "batch": 8, "seq_len": t, "p50_ms": 1.0 + i + t / 100}
            for i, v in enumerate(VARIANTS) for profile, runtime in PROFILES.items()
            for t in LENGTHS]


def split_rows():
    return [{"variant": v, "pooling": "mean", "batch": 8, "seq_len": t, "head_p50_ms": 0.1 * i,
             "backbone_p50_ms": 5.0 + t} for i, v in enumerate(VARIANTS[:5]) for t in LENGTHS]


def test_latency_lines_one_colour_per_variant_one_style_per_profile():
    fig = draw_latency_vs_length(latency_rows(), split_rows())
    left, right = fig.axes[:2]
    lines = {line.get_label(): line for line in left.get_lines()}
    assert len(lines) == len(VARIANTS) * len(PROFILES)
    colour = {}
    for label, line in lines.items():
        variant, profile = label.split(" ")
        colour.setdefault(variant, set()).add(to_rgba(line.get_color()))
    # one colour per variant, and no two variants share one (m1/onnx-int8 vs m5/merged was)
    assert all(len(c) == 1 for c in colour.values())
    assert len({c for cs in colour.values() for c in cs}) == len(VARIANTS)
    for variant in VARIANTS:
        mine = [lines[f"{variant} {p}"] for p in PROFILES]
        assert len({(line.get_linestyle(), line.get_marker()) for line in mine}) == len(PROFILES)
        assert len({line.get_linestyle() for line in mine}) == len(PROFILES)
    # the cost-split panel draws each variant's head in the colour it has on the left
    for line in right.get_lines():
        variant = line.get_label().split(" ")[0]
        if variant in colour:
            assert {to_rgba(line.get_color())} == colour[variant]
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert set(VARIANTS) | set(PROFILES) == set(legend)  # a key per variant and per profile


def test_line_styles_fixed_mapping():
    styles = latency_line_styles(latency_rows())
    assert [styles[f"p/m{i}/onnx-fp32"]["color"] for i in range(1, 6)] == \
        ["C0", "C1", "C2", "C3", "C4"]
    assert styles["p/m1/onnx-fp32"]["linestyle"] == "-"
    assert styles["p/m1/onnx-int8"]["linestyle"] == "--"
    assert styles["p/m1/onnx-fp16"]["linestyle"] == "-."
    assert styles["p/m1/merged"]["linestyle"] == ":"
    # m3's colour does not depend on which other variants were timed
    alone = latency_line_styles([r for r in latency_rows() if r["variant"] == "m3"])
    assert alone["p/m3/merged"]["color"] == "C2"


STS_TASKS = ("sts0", "sts1", "sts2")  # 3 tasks: a task-paired test cannot reach p < 0.05


def sharded_quality(shards=5):
    """m4 ahead of m1 on every STS shard; 3 tasks x 5 shards = 15 shard pairs."""
    def entry(variant, gain):
        rows = [{"task": t, "category": "STS", "score": 0.5 + 0.01 * i + gain,
                 "shard_scores": [0.5 + 0.01 * i + 0.001 * k + gain * (1 + 0.1 * k)
                                  for k in range(shards)]} for i, t in enumerate(STS_TASKS)]
        return {"variant": variant, "profile": "onnx-fp32", "shards": shards, "rows": rows}
    return {"p/m1/onnx-fp32": entry("m1", 0.0), "p/m4/onnx-fp32": entry("m4", 0.02)}


def task_only(quality):
    return {m: {**e, "shards": 1, "rows": [{k: v for k, v in r.items() if k != "shard_scores"}
                                           for r in e["rows"]]} for m, e in quality.items()}


def test_pairing_unit_follows_the_quality_results():
    quality = sharded_quality()
    assert pairing_unit(quality) == "shard"
    assert pairing_unit(task_only(quality)) == "task"
    assert pairing_unit(None) == "task"
    mixed = {**quality, "p/m5/onnx-fp32": task_only(quality)["p/m4/onnx-fp32"]}
    assert pairing_unit(mixed) == "task"  # shard pairs would be missing for m5


@pytest.mark.parametrize("pairing, significant, n", [("shard", True, 15), ("task", False, 3)])
def test_quality_points_marked_with_the_suites_pairing(tmp_path, pairing, significant, n):
    quality = sharded_quality() if pairing == "shard" else task_only(sharded_quality())
    split = [{"variant": "m4", "shape": "8x128", "batch": 8, "seq_len": 128, "added_ms": 0.3,
              "added_pct": 1.0}]
    points = family_points(quality, split)
    (point,) = points
    assert point["variant"] == "m4" and point["unit"] == pairing and point["n"] == n
    assert point["significant"] is significant and point["mean_delta"] > 0
    fig = draw_quality_vs_latency(points)
    axis = fig.axes[0]
    assert f"paired by {pairing} (n={n})" in axis.get_title()
    filled = [c for c in axis.collections if len(c.get_offsets())]
    assert len(filled) == 1
    assert bool((filled[0].get_facecolors()[:, 3] > 0).any()) == significant
    path = plot_quality_vs_latency(points, tmp_path / "q.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

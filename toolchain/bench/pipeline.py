"""The stage's library entry points: latency over artifacts, and `bench all` (latency + cost
split + quality + compare + budget + report) over a preset's runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from toolchain.bench.artifacts import Artifact, open_artifact, preset_artifacts, torch_source
from toolchain.bench.budget import Budget, check_budget
from toolchain.bench.latency import (ALL_GRID, machine_info, matmul_peak_gflops,
                                     ort_matmul_limit, parse_grid, time_runner)
from toolchain.bench.split import analytic_table, cost_split
from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import HeadConfig, head_macs
from toolchain.modeling.shapes import ModelShape, backbone_macs
from toolchain.modeling.variants import VARIANTS
from toolchain.paths import runs_dir

SPLIT_METHOD = ("Measured in PyTorch eager on the merged model (threads in each row): the "
                "backbone forward is timed "
                "alone; its features are cached and the head (+ L2 normalise) is timed alone on "
                "them, next to an eos_last head on the same features. added = head - eos_last "
                "(p50); % is of the backbone's p50.")
ISOLATION = "process per runtime"  # how each latency row was timed (see in_fresh_process)


@dataclass
class LatencySettings:
    """How `bench latency` / `bench all` time things (defaults: the `bench latency` command)."""

    grid: str = "1x32,8x128,32x512"
    warmup: int = 3
    repeats: int = 20
    threads: int | None = None
    # The cost split times sub-millisecond heads in torch eager. With 2 OpenMP threads on a
    # shared 2-core machine one descheduled thread stalls every op at the barrier (seen: a
    # 0.5 ms head measuring 100+ ms), so the split runs single-threaded unless asked otherwise.
    split_threads: int | None = 1
    provider: str = "cpu"
    with_torch: bool = True
    split: bool = True
    max_seconds: float | None = 20.0  # per shape and runner; keeps a slow shape from stalling CI
    shapes: list = field(init=False)

    def __post_init__(self) -> None:
        self.shapes = parse_grid(self.grid)


def source_macs(source: Path, seq_len: int) -> int:
    """Analytic MACs per text of a merged model directory (backbone + head's per-text part),
    read from its config files without loading weights."""
    shape = ModelShape.from_config(json.loads((source / "backbone" / "config.json").read_text()))
    head = HeadConfig.from_dict(json.loads((source / "pooling" / "config.json").read_text()))
    return backbone_macs(shape, seq_len) + head_macs(head, seq_len)["per_text"]


def _with_torch_sources(artifacts: Sequence[Artifact]) -> list[Artifact]:
    """The artifacts plus, for each ONNX one, its merged PyTorch model (once each)."""
    seen = {a.path.resolve() for a in artifacts}
    out = list(artifacts)
    for artifact in artifacts:
        source = torch_source(artifact)
        if source is not None and source.resolve() not in seen:
            seen.add(source.resolve())
            out.append(Artifact(source, "torch", artifact.variant, source.name))
    return out


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned interpreter; returns its result (errors re-raised).

    Each runtime is timed in its own process: ONNX Runtime's spinning intra-op threads and
    PyTorch's OpenMP pool in one process stall each other on a small CPU (eager read up to ~60x
    slow after ORT sessions on 2 cores). The child inherits the environment (OMP_NUM_THREADS,
    POOLATTN_RUNS); thread counts are passed explicitly and recorded in every row.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _time_targets(targets: Sequence[Artifact], settings: LatencySettings) -> list[list[dict]]:
    """Time each target in turn (one runtime's artifacts), each runner closed before the next;
    meant to run in a fresh process (``in_fresh_process``)."""
    import gc
    import os

    out = []
    for artifact in targets:
        runner = open_artifact(artifact, settings.provider, settings.threads)
        rows = time_runner(runner, settings.shapes, settings.warmup, settings.repeats,
                           settings.max_seconds)
        source = torch_source(artifact)
        for row in rows:
            row.update(model=artifact.label, profile=artifact.profile, variant=artifact.variant,
                       artifact=str(artifact.path), isolation=ISOLATION, pid=os.getpid())
            if source is not None:
                flop = 2 * row["batch"] * source_macs(source, row["seq_len"])
                row.update(gflop_per_batch=flop / 1e9,
                           achieved_gflops=flop / 1e9 / (row["p50_ms"] / 1e3))
        out.append(rows)
        del runner
        gc.collect()  # an ORT session's thread pool ends with the session
    return out


def _cost_splits(sources: Sequence[Path], settings: LatencySettings) -> list[dict]:
    """The cost split of each merged model directory (torch eager), in a fresh process."""
    from toolchain.modeling import load_embedding_model

    rows = []
    for source in sources:
        model = load_embedding_model(source)
        threads = settings.split_threads or settings.threads
        rows += cost_split(model, settings.shapes, settings.warmup, settings.repeats,
                           settings.max_seconds, threads)
    return rows


def run_latency(artifacts: Sequence[Artifact], settings: LatencySettings) -> dict:
    """Time every artifact (and its PyTorch model with ``with_torch``) over the grid, and the
    cost split per variant. Each runtime (onnx, torch) and the cost split run in their own
    fresh process, so no other runtime's thread pool competes with the one being timed.

    Returns:
        {"latency": rows, "split": rows, "analytic": rows, "split_method": str}.
    """
    targets = _with_torch_sources(artifacts) if settings.with_torch else list(artifacts)
    by_runtime: dict[str, list[int]] = {}
    for index, artifact in enumerate(targets):
        by_runtime.setdefault(artifact.runtime, []).append(index)
    per_target: dict[int, list[dict]] = {}
    for indices in by_runtime.values():
        timed = in_fresh_process(_time_targets, [targets[i] for i in indices], settings)
        per_target.update(zip(indices, timed))
    latency = [row for index in range(len(targets)) for row in per_target[index]]
    sources: dict[str, Path] = {}
    for artifact in artifacts:
        source = torch_source(artifact)
        if settings.split and source is not None:
            sources.setdefault(artifact.variant, source)
    split = in_fresh_process(_cost_splits, list(sources.values()), settings) if sources else []
    variants = [VARIANTS[v] for v in dict.fromkeys(a.variant for a in artifacts) if v in VARIANTS]
    seq_lens = sorted({t for _, t in settings.shapes})
    return {"latency": latency, "split": split, "split_method": SPLIT_METHOD,
            "analytic": analytic_table(variants, seq_lens=seq_lens)}


@dataclass
class AllSettings:
    """`bench all` knobs: small grid and repeats by default so `make bench` takes minutes."""

    latency: LatencySettings = field(default_factory=lambda: LatencySettings(
        grid=ALL_GRID, warmup=1, repeats=5, max_seconds=2.0))
    profiles: tuple[str, ...] = ("onnx-fp32", "onnx-int8", "merged")
    quality_profile: str = "onnx-fp32"
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    quality: bool = True
    shards: int = 1  # > 1: per-shard scores too (compare --unit shard)
    # quality baselines (toolchain.baselines) evaluated beside the variants: None = every
    # registered one built under runs/<preset>/ (auto), () = none, else these names (required)
    baselines: tuple[str, ...] | None = None
    exclude_tasks: tuple[str, ...] = ("WordNetDefinitionRetrieval",)  # in-domain, for compare
    # a short open-loop load level per variant below (its quality_profile artifact behind
    # `poolattn serve` on loopback); () = none. m1 beside another gives the head under load.
    load_variants: tuple[str, ...] = ("m1", "m5")
    load_rates: tuple[float, ...] = (20.0,)
    load_seconds: float = 3.0
    load_p99_budget_ms: float = 100.0


def quality_artifacts(preset: str, variants: Sequence[str], settings: AllSettings,
                      timed: Sequence[Artifact]) -> list[Artifact]:
    """One artifact per run for the quality suite: each variant's ``quality_profile`` (else its
    first timed artifact), then each baseline's ``quality_profile`` (else its own profile).

    Raises:
        ToolchainError: a baseline named explicitly that has not been built.
    """
    from toolchain.baselines import existing_baselines, get_baseline

    chosen = []
    for variant in variants:
        mine = [a for a in timed if a.run == variant]
        best = [a for a in mine if a.profile == settings.quality_profile] or mine[:1]
        chosen += best
    names = settings.baselines
    found = existing_baselines(preset, None if names is None else list(names))
    missing = [n for n in (names or ()) if n not in found]
    if missing:
        raise ToolchainError(f"baseline(s) {', '.join(missing)} not built under "
                             f"{runs_dir() / preset}; run `poolattn baseline --preset {preset} "
                             f"{' '.join(missing)}`")
    for name in found:
        profiles = dict.fromkeys([settings.quality_profile, get_baseline(name).profile])
        chosen += preset_artifacts(preset, [name], list(profiles))[:1]
    return chosen


def run_load_stage(preset: str, variants: Sequence[str], settings: AllSettings,
                   artifacts: Sequence[Artifact], split: list[dict]) -> dict | None:
    """`bench all`'s short load level: each of ``load_variants`` (present among ``variants``)
    served from its quality_profile artifact, ``load_rates`` for ``load_seconds`` each."""
    from toolchain.bench.load import LoadSettings, suite_texts
    from toolchain.bench.load_runs import LoadRunSettings, run_load_all

    wanted = [v for v in variants if v in settings.load_variants]
    chosen = [a for a in artifacts if a.run in wanted and a.profile == settings.quality_profile]
    if not chosen:
        return None
    rates = settings.load_rates
    load = LoadSettings(rates, max_requests=int(max(rates) * settings.load_seconds) + 1,
                        max_seconds=settings.load_seconds, timeout_s=10.0)
    run = LoadRunSettings(load=load, threads=settings.latency.threads)
    return run_load_all([str(a.path) for a in chosen], None, preset, run, suite_texts(),
                        settings.load_p99_budget_ms, "the suite (benchmarks/data/tasks)", split)


def run_all(preset: str, variants: Sequence[str], settings: AllSettings,
            budget: Budget | None = None, out_dir: Path | None = None) -> dict:
    """Latency, cost split, quality, compare, budget and report for runs/<preset>/<variants>.

    Returns:
        The report dict (also written to ``out_dir``, default runs/<preset>/bench/).
    """
    from toolchain.bench.against import compare_against
    from toolchain.bench.quality import evaluate_artifacts, trained_only
    from toolchain.bench.report import pairing_unit, write_report

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ToolchainError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    out_dir = Path(out_dir) if out_dir else runs_dir() / preset / "bench"
    start = time.perf_counter()
    artifacts = preset_artifacts(preset, variants, settings.profiles)
    lat = settings.latency
    if "merged" in settings.profiles:  # merged dirs are listed already: timed as torch runners
        lat = replace(lat, with_torch=False)
    measured = run_latency(artifacts, lat)
    quality, comparison = None, []
    if settings.quality:
        quality = evaluate_artifacts(quality_artifacts(preset, variants, settings, artifacts),
                                     out_dir, settings.tasks, settings.limit, lat.provider,
                                     lat.threads, settings.shards)["models"]
    elif (out_dir / "quality.json").is_file():  # scored earlier (bench quality --merge, in parts)
        from toolchain.bench.compare import load_quality

        quality = load_quality([out_dir / "quality.json"])
    if quality:
        references = ["m1"] + list(dict.fromkeys(
            e["run"] for e in quality.values() if e["role"] != "variant"))
        present = [b for b in references if any(e.get("run") == b or e["variant"] == b
                                                for e in quality.values())]
        comparison = [row for rows in compare_against(quality, present, pairing_unit(quality),
                                                      settings.exclude_tasks).values()
                      for row in rows]
    load = run_load_stage(preset, variants, settings, artifacts, measured["split"])
    report = {"preset": preset, "variants": list(variants), "load": load,
              "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": machine_info(), "matmul_peak": matmul_peak_gflops(lat.threads),
              "matmul_limit": ort_matmul_limit(lat.threads),
              "settings": {"grid": lat.grid, "warmup": lat.warmup, "repeats": lat.repeats,
                           "threads": lat.threads, "split_threads": lat.split_threads,
                           "provider": lat.provider,
                           "max_seconds": lat.max_seconds, "tasks": settings.tasks,
                           "limit": settings.limit, "shards": settings.shards},
              **measured, "quality": quality, "compare": comparison, "budget": None}
    report["settings"]["baselines"] = sorted({e["run"] for e in (quality or {}).values()
                                              if e["role"] != "variant"})
    if budget is not None:  # budgets hold the deployable variants, not the baselines
        violations = check_budget(budget, measured["latency"], measured["split"],
                                  trained_only(quality) if quality else None,
                                  [VARIANTS[v] for v in variants],
                                  load["curves"] if load else None)
        report["budget"] = {"file": str(budget.path), "violations": violations,
                            "passed": not violations}
    report["seconds"] = time.perf_counter() - start
    return write_report(report, out_dir)

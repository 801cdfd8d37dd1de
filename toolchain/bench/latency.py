"""Latency harness: a grid of batch x sequence-length shapes, warm-up, repeated timed runs.

Timing follows nanoGPT's bench.py: a burn-in stage, then a timed stage; every number is stored
with the model, runtime (onnx/torch), provider, threads, batch and sequence length. Inputs are
pre-tokenised (real token ids from the model's own tokenizer, tiled to the wanted length, EOS
last, no padding) so only the model's forward pass is timed.
"""

from __future__ import annotations

import os
import platform
import re
import time
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from toolchain.errors import ToolchainError

DEFAULT_GRID = "1x32,8x128,32x512"
# `bench all`: three sequence lengths (for the latency-vs-length plot) at small batches, so
# `make bench` over 5 variants x 3 runtimes stays within minutes on 2 cores.
ALL_GRID = "1x32,8x128,2x512"
# Filler text: its real token ids are tiled to the wanted sequence length.
SAMPLE_TEXT = ("Pooling and attention are effective designs for embedding models built on large "
               "language models; the benchmark measures what each pooling head costs.")


@runtime_checkable
class Runner(Protocol):
    """What the harness times: ``toolchain.embedder.Embedder`` satisfies it."""

    name: str
    kind: str  # "onnx" | "torch"
    manifest: dict

    def tokenize(self, texts: Sequence[str]) -> dict: ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def parse_grid(spec: str) -> list[tuple[int, int]]:
    """``"1x32,8x128"`` -> ``[(1, 32), (8, 128)]``.

    Raises:
        ToolchainError: a malformed entry or a non-positive size.
    """
    shapes = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        match = re.fullmatch(r"(\d+)x(\d+)", item)
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise ToolchainError(f"grid entry {item!r}: expected BATCHxSEQ_LEN with sizes >= 1, "
                                 f"e.g. 8x128")
        shapes.append((int(match[1]), int(match[2])))
    if not shapes:
        raise ToolchainError("empty grid: give shapes like 1x32,8x128")
    return shapes


def shape_key(batch: int, seq_len: int) -> str:
    return f"{batch}x{seq_len}"


def make_inputs(runner: Runner, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) int64 ids and an all-ones mask from the runner's own tokenizer; EOS is last."""
    encoded = runner.tokenize([SAMPLE_TEXT])
    ids = np.asarray(encoded["input_ids"])[0]
    ids = ids[np.asarray(encoded["attention_mask"])[0].astype(bool)]
    body, eos = ids[:-1], ids[-1]
    if seq_len == 1:
        row = np.array([eos])
    else:
        row = np.concatenate([np.resize(body, seq_len - 1), [eos]])
    input_ids = np.tile(row.astype(np.int64), (batch, 1))
    return input_ids, np.ones_like(input_ids)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (linear interpolation), mean and min of a list of milliseconds."""
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.size == 0:
        raise ToolchainError("no timing samples")
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_ms": float(data.mean()), "min_ms": float(data.min())}


def time_callable(fn: Callable[[], object], warmup: int = 3, repeats: int = 20,
                  max_seconds: float | None = None, min_repeats: int = 3) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then time up to ``repeats`` calls (ms each).

    ``max_seconds`` stops the timed stage early once spent (after at least ``min_repeats``
    calls), so a large shape cannot stall a CI run; the caller records how many ran.
    """
    if warmup < 0 or repeats < 1:
        raise ToolchainError(f"need warmup >= 0 and repeats >= 1, got {warmup}, {repeats}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        spent = time.perf_counter() - start
        if max_seconds is not None and len(samples) >= min_repeats and spent > max_seconds:
            break
    return samples


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int = 3,
                     repeats: int = 20) -> dict[str, list[float]]:
    """Time several callables in alternating rounds (A, B, C, A, B, C, ...), ms per call.

    On a shared machine load drifts over minutes; interleaving gives every contender the same
    conditions, so their ratio stays meaningful even when absolute times move.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def runner_fields(runner: Runner) -> dict:
    """Identity of a timed runner: name, runtime, provider, threads, variant, profile."""
    manifest = getattr(runner, "manifest", {}) or {}
    profile = manifest.get("profile")
    profile = profile.get("name") if isinstance(profile, dict) else profile  # export: a dict
    return {"model": runner.name, "runtime": runner.kind,
            "provider": getattr(runner, "provider", None) or runner.kind,
            "threads": getattr(runner, "threads", None),
            "variant": manifest.get("variant"), "pooling": manifest.get("pooling"),
            "attention": manifest.get("attention"),
            "profile": profile or ("eager" if runner.kind == "torch" else None)}


def time_runner(runner: Runner, shapes: Sequence[tuple[int, int]], warmup: int = 3,
                repeats: int = 20, max_seconds: float | None = None) -> list[dict]:
    """Time ``runner.run`` at each (batch, seq_len): one row per shape with percentiles and
    texts/s and tokens/s at the median."""
    rows = []
    for batch, seq_len in shapes:
        input_ids, attention_mask = make_inputs(runner, batch, seq_len)
        samples = time_callable(lambda: runner.run(input_ids, attention_mask), warmup, repeats,
                                max_seconds)
        stats = percentiles(samples)
        seconds = stats["p50_ms"] / 1e3
        rows.append({**runner_fields(runner), "shape": shape_key(batch, seq_len), "batch": batch,
                     "seq_len": seq_len, "warmup": warmup, "repeats": len(samples), **stats,
                     "texts_per_s": batch / seconds, "tokens_per_s": batch * seq_len / seconds})
    return rows


def matmul_peak_gflops(threads: int | None = None, size: int = 1024, repeats: int = 10) -> dict:
    """The machine's measured fp32 matmul rate (torch/oneDNN-MKL, square ``size`` matrices).

    The reference point for "achieved GFLOP/s of the exported graph": best of ``repeats``.
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        samples = time_callable(lambda: torch.mm(a, b), warmup=3, repeats=repeats)
    finally:
        torch.set_num_threads(previous)
    best = min(samples) / 1e3
    return {"size": size, "threads": threads or previous, "best_ms": min(samples),
            "gflops": 2 * size ** 3 / best / 1e9}


# One MatMul each: the exported graphs' shapes at 8x128 (SmolLM2's MLP), and large square ones.
MATMUL_LIMIT_SHAPES = ((1024, 576, 1536), (4096, 576, 1536), (2048, 2048, 2048), (4096, 4096, 4096))


def _ort_matmul_rate(m: int, k: int, n: int, threads: int | None, repeats: int, rng) -> dict:
    """One MatMul graph, activations (m, k) times a constant (k, n) weight, timed in ORT."""
    from onnx import TensorProto, helper, numpy_helper

    from toolchain.ort_session import ort_session

    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session, _ = ort_session(model.SerializeToString(), None, "cpu", threads)
    feed = {"x": rng.standard_normal((m, k), dtype=np.float32)}
    best = min(time_callable(lambda: session.run(None, feed), warmup=2, repeats=repeats)) / 1e3
    return {"m": m, "k": k, "n": n, "best_ms": best * 1e3, "gflops": 2 * m * k * n / best / 1e9}


def ort_matmul_limit(threads: int | None = None, shapes=MATMUL_LIMIT_SHAPES,
                     repeats: int = 5) -> dict:
    """The machine's fp32 MatMul rate as ONNX Runtime reaches it: one graph per (m, k, n) shape,
    as the exported graphs' projections run (constant weight). The limit is the best rate over
    the shapes (torch.mm at 1024^2 under-reads it)."""
    rng = np.random.default_rng(0)
    rows = [_ort_matmul_rate(m, k, n, threads, repeats, rng) for m, k, n in shapes]
    return {"threads": threads, "gflops": max(r["gflops"] for r in rows), "shapes": rows}


def machine_info() -> dict:
    """CPU model and flags, cores, OS, library versions and thread settings, stored with every
    result."""
    import onnxruntime
    import torch

    from toolchain.cpu import recorded_flags

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpu_flags": recorded_flags()}

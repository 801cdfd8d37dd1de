"""Load runs per artifact: start `poolattn serve` on loopback, check its vectors, walk the rate
levels, measure throughput at saturation next to the offline Embedder's, stop it; and the
per-variant summaries (highest rate within a p99 budget, the head's added latency under load).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from toolchain.bench.artifacts import Artifact
from toolchain.bench.load import LoadSettings, run_load
from toolchain.bench.pipeline import in_fresh_process

REFERENCE_TEXTS = 256  # distinct texts the load draws from when vectors are checked


@dataclass
class LoadRunSettings:
    """What `bench load --artifact` and `bench all` run per artifact."""

    load: LoadSettings = field(default_factory=LoadSettings)
    threads: int | None = None            # the server's model threads (and the offline run's)
    serve_options: tuple[str, ...] = ()    # extra `poolattn serve` options
    check_vectors: bool = True             # compare every response with Embedder.open's
    saturation_s: float = 0.0              # > 0: closed-loop throughput for this long
    saturation_clients: int = 8
    saturation_texts: int = 8              # texts per request at saturation
    offline_batch: int = 32


def reference_vectors(artifact: Path, texts: Sequence[str], threads: int | None) -> dict:
    """{text: vector} from Embedder.open (what the served vectors must equal)."""
    from toolchain.embedder import Embedder

    embedder = Embedder.open(artifact, provider="cpu", threads=threads)
    return dict(zip(texts, embedder.encode(list(texts))))


def offline_texts_per_s(artifact: Path, texts: Sequence[str], threads: int | None,
                        batch_size: int, repeats: int = 3) -> dict:
    """Embedder.open(...).encode over ``texts`` in batches: best of ``repeats`` passes."""
    from toolchain.embedder import Embedder

    embedder = Embedder.open(artifact, provider="cpu", threads=threads)
    embedder.encode(list(texts[:batch_size]), batch_size)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.encode(list(texts), batch_size)
        best = min(best, time.perf_counter() - start)
    return {"texts": len(texts), "batch_size": batch_size, "threads": embedder.threads,
            "seconds": best, "texts_per_s": len(texts) / best}


async def _closed_loop(url: str, texts: Sequence[str], clients: int, per_request: int,
                       seconds: float) -> dict:
    import aiohttp

    done = {"texts": 0, "requests": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def client(index: int, session) -> None:
        position = index * per_request
        while time.perf_counter() < deadline:
            batch = [texts[(position + j) % len(texts)] for j in range(per_request)]
            position += clients * per_request
            try:
                # base64 float32: what a high-throughput client asks for (no float text)
                body = {"input": batch, "encoding_format": "base64"}
                async with session.post(url + "/v1/embeddings", json=body) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, OSError):
                ok = False
            done["requests" if ok else "errors"] += 1
            done["texts"] += per_request if ok else 0

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    elapsed = time.perf_counter() - start
    return {**done, "clients": clients, "texts_per_request": per_request,
            "seconds": elapsed, "texts_per_s": done["texts"] / elapsed}


def saturation(url: str, texts: Sequence[str], clients: int, per_request: int,
               seconds: float) -> dict:
    """Closed loop: ``clients`` senders, each posting ``per_request`` texts as soon as its last
    answer came, for ``seconds``: the server's texts/s when it is never idle."""
    return asyncio.run(_closed_loop(url.rstrip("/"), texts, clients, per_request, seconds))


def load_artifact(artifact: Artifact, settings: LoadRunSettings, texts: Sequence[str],
                  log: Path | None = None) -> dict:
    """One artifact's curve (and saturation vs offline when asked), its own server started on
    loopback and stopped after."""
    from toolchain.serve.process import ServerProcess

    rng = np.random.default_rng(settings.load.seed)
    pool = list(dict.fromkeys(texts))
    if settings.check_vectors and len(pool) > REFERENCE_TEXTS:
        pool = [pool[i] for i in sorted(rng.choice(len(pool), REFERENCE_TEXTS, replace=False))]
    reference = (in_fresh_process(reference_vectors, artifact.path, pool, settings.threads)
                 if settings.check_vectors else None)
    options = [*(["--threads", str(settings.threads)] if settings.threads else []),
               *settings.serve_options]
    result = {"model": artifact.label, "variant": artifact.variant, "profile": artifact.profile,
              "artifact": str(artifact.path), "threads": settings.threads,
              "serve_options": list(settings.serve_options), "texts_pool": len(pool),
              "checked_vectors": settings.check_vectors}
    server = ServerProcess(artifact.path, options=options, log=log)
    started = time.perf_counter()
    with server:
        result["startup_s"] = time.perf_counter() - started
        result["levels"] = run_load(server.url, settings.load, pool, reference)
        if settings.saturation_s > 0:
            result.update(_saturation_vs_offline(server.url, artifact.path, pool, settings))
    return result


def _saturation_vs_offline(url: str, artifact: Path, pool: list[str],
                           settings: LoadRunSettings) -> dict:
    """Offline, saturation, offline again (the server idle during the offline runs, each in a
    fresh process): the ratio uses the mean of the two offline rates, so load that drifts on a
    shared machine moves both sides alike."""
    offline = [in_fresh_process(offline_texts_per_s, artifact, pool, settings.threads,
                                settings.offline_batch)]
    busy = saturation(url, pool, settings.saturation_clients, settings.saturation_texts,
                      settings.saturation_s)
    offline.append(in_fresh_process(offline_texts_per_s, artifact, pool, settings.threads,
                                    settings.offline_batch))
    rate = sum(o["texts_per_s"] for o in offline) / len(offline)
    return {"saturation": busy, "offline": {**offline[0], "texts_per_s": rate,
                                            "runs_texts_per_s": [o["texts_per_s"]
                                                                 for o in offline]},
            "saturation_vs_offline": busy["texts_per_s"] / rate}


def max_rate_within(levels: list[dict], p99_budget_ms: float) -> float | None:
    """The highest offered rate whose p99 is within the budget with every request answered
    correctly (no error, timeout or mismatch); None if no level qualifies."""
    good = [lv["offered_rps"] for lv in levels
            if lv["p99_ms"] is not None and lv["p99_ms"] <= p99_budget_ms
            and lv["ok"] == lv["sent"]]
    return max(good) if good else None


def head_under_load(curves: list[dict], split: list[dict], baseline: str = "m1") -> list[dict]:
    """Per variant and rate: p50/p99 under load minus the ``baseline`` variant's (eos_last) at
    the same offered rate, beside the head's single-call added ms (the cost split's, at its
    8x128 row or the nearest)."""
    base = next((c for c in curves if c["variant"] == baseline), None)
    if base is None:
        return []
    base_levels = {lv["offered_rps"]: lv for lv in base["levels"]}
    rows = []
    for curve in curves:
        if curve["variant"] == baseline:
            continue
        single = [r for r in split if r["variant"] == curve["variant"]]
        single = sorted(single, key=lambda r: abs(r["batch"] * r["seq_len"] - 8 * 128))[:1]
        for level in curve["levels"]:
            other = base_levels.get(level["offered_rps"])
            if other is None or level["p50_ms"] is None or other["p50_ms"] is None:
                continue
            rows.append({"variant": curve["variant"], "offered_rps": level["offered_rps"],
                         "added_p50_ms": level["p50_ms"] - other["p50_ms"],
                         "added_p99_ms": level["p99_ms"] - other["p99_ms"],
                         "single_call_added_ms": single[0]["added_ms"] if single else None,
                         "single_call_shape": single[0]["shape"] if single else None})
    return rows


def run_load_all(artifacts: list, url: str | None, label: str, settings: LoadRunSettings,
                 texts: Sequence[str], p99_budget_ms: float, texts_source: str,
                 split: list[dict] | None = None) -> dict:
    """Curves for artifact paths (a server each) or one running server at ``url``, with the
    per-variant summaries; what `bench load` prints and writes."""
    from toolchain.bench.artifacts import inspect_artifact

    if url:
        levels = run_load(url, settings.load, list(dict.fromkeys(texts)))
        curves = [{"model": label, "variant": label, "profile": "server", "artifact": None,
                   "threads": None, "startup_s": 0.0, "levels": levels,
                   "checked_vectors": False}]
    else:
        curves = [load_artifact(inspect_artifact(a), settings, texts) for a in artifacts]
    settings_dict = {k: v for k, v in vars(settings.load).items()}
    return {"settings": settings_dict, "threads": settings.threads, "texts_source": texts_source,
            "p99_budget_ms": p99_budget_ms, "curves": curves,
            "head": head_under_load(curves, split or [])}

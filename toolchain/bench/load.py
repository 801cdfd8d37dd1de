"""`bench load`: open-loop Poisson arrivals against a running embedding server.

Each level offers one request rate: arrival times are drawn up front (exponential gaps, seeded)
and every request is sent at its time whether or not earlier ones have answered (open loop, so
a slow server meets the queue real traffic would build). A level ends after ``max_requests``
arrivals or ``max_seconds``, whichever comes first; requests still out then get the rest of
their ``timeout_s``. Per level: achieved rate, p50/p95/p99, errors, timeouts, responses whose
vectors are missing or differ from the reference, and the batches the server formed (its
/metrics before and after).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from toolchain.bench.latency import percentiles
from toolchain.errors import ToolchainError
from toolchain.paths import project_root

SUITE_DIR = Path("benchmarks") / "data" / "tasks"
TEXT_FIELDS = ("text", "sentences")


@dataclass
class LoadSettings:
    """One load run (the `bench load` options)."""

    rates: tuple[float, ...] = (5.0, 10.0, 20.0)
    max_requests: int = 200       # arrivals per level
    max_seconds: float = 10.0     # arrival window per level
    timeout_s: float = 10.0       # per request
    texts_per_request: int = 1
    api: str = "openai"           # "openai" (/v1/embeddings) | "tei" (/embed)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.rates or min(self.rates) <= 0:
            raise ToolchainError(f"rates must be positive request rates, got {self.rates}")
        if self.max_requests < 1 or self.max_seconds <= 0 or self.timeout_s <= 0:
            raise ToolchainError("max_requests, max_seconds and timeout_s must be positive")
        if self.texts_per_request < 1 or self.api not in ("openai", "tei"):
            raise ToolchainError(f"texts_per_request >= 1 and api openai|tei, got "
                                 f"{self.texts_per_request}, {self.api!r}")


def parse_rates(spec: str) -> tuple[float, ...]:
    """``"5,10,20"`` -> (5.0, 10.0, 20.0). Raises ToolchainError on a bad entry."""
    try:
        rates = tuple(float(r) for r in spec.split(",") if r.strip())
    except ValueError:
        raise ToolchainError(f"rates {spec!r}: expected numbers like 5,10,20") from None
    if not rates or min(rates) <= 0:
        raise ToolchainError(f"rates {spec!r}: give positive requests per second")
    return rates


def suite_texts(root: Path | None = None) -> list[str]:
    """Every text of the offline suite (benchmarks/data/tasks/*/*.jsonl, fields text or
    sentences): the default length distribution of the load."""
    texts = []
    for path in sorted((root or project_root() / SUITE_DIR).glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            texts += [row[f] for f in TEXT_FIELDS if isinstance(row.get(f), str)]
    if not texts:
        raise ToolchainError(f"no texts under {root or project_root() / SUITE_DIR}")
    return texts


def read_texts(path: str | Path) -> list[str]:
    """A user's texts: JSONL rows with a "text" field, or plain text one per line.

    Raises:
        ToolchainError: a missing file, an empty one, or a JSONL row without "text" (file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"{path}: texts file does not exist")
    texts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ToolchainError(f"{path}:{number}: not JSON ({err})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ToolchainError(f"{path}:{number}:text: expected a string field 'text'")
            texts.append(row["text"])
        else:
            texts.append(line)
    if not texts:
        raise ToolchainError(f"{path}: no texts")
    return texts


def arrival_offsets(rate: float, max_requests: int, max_seconds: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Poisson arrival times (s from the level's start): exponential gaps of mean 1/rate,
    at most ``max_requests``, all before ``max_seconds``."""
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=max_requests))
    return offsets[offsets < max_seconds]


def _request(api: str, texts: list[str]) -> tuple[str, dict]:
    if api == "tei":
        return "/embed", {"inputs": texts}
    return "/v1/embeddings", {"input": texts}


def _vectors(api: str, body) -> np.ndarray:
    rows = body if api == "tei" else [item["embedding"] for item in body["data"]]
    return np.asarray(rows, dtype=np.float32)


async def _one(session, url: str, api: str, texts: list[str], delay: float, timeout_s: float,
               reference: dict[str, np.ndarray] | None, min_cosine: float) -> dict:
    import aiohttp

    await asyncio.sleep(delay)
    path, body = _request(api, texts)
    start = time.perf_counter()
    try:
        async with session.post(url + path, json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            payload = await response.json(content_type=None)
            status = response.status
    except asyncio.TimeoutError:
        return {"outcome": "timeout"}
    except (aiohttp.ClientError, OSError, ValueError) as err:
        return {"outcome": "error", "error": type(err).__name__}
    ms = (time.perf_counter() - start) * 1e3
    if status != 200:
        return {"outcome": "error", "error": f"HTTP {status}", "ms": ms}
    vectors = _vectors(api, payload)
    ok = vectors.shape[0] == len(texts)
    if ok and reference is not None:
        expected = np.stack([reference[t] for t in texts])
        ok = bool((np.sum(vectors * expected, axis=1) >= min_cosine).all())
    return {"outcome": "ok" if ok else "mismatch", "ms": ms, "texts": len(texts)}


async def _metrics(session, url: str) -> dict | None:
    try:
        async with session.get(url + "/metrics") as response:
            return await response.json() if response.status == 200 else None
    except Exception:  # noqa: BLE001 (a dead server has no metrics; the level says so)
        return None


def _batch_diff(before: dict | None, after: dict | None, key: str) -> dict[str, int]:
    if not before or not after:
        return {}
    diff = Counter(after.get(key, {})) - Counter(before.get(key, {}))
    return {k: v for k, v in sorted(diff.items(), key=lambda kv: int(kv[0]))}


def _mean_size(histogram: dict[str, int]) -> float | None:
    total = sum(histogram.values())
    return sum(int(k) * v for k, v in histogram.items()) / total if total else None


async def _level(url: str, rate: float, texts: Sequence[str], settings: LoadSettings,
                 rng: np.random.Generator, reference, min_cosine: float) -> dict:
    import aiohttp

    offsets = arrival_offsets(rate, settings.max_requests, settings.max_seconds, rng)
    picks = rng.integers(0, len(texts), size=(len(offsets), settings.texts_per_request))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await _metrics(session, url)
        start = time.perf_counter()
        jobs = [_one(session, url, settings.api, [texts[i] for i in row], float(at),
                     settings.timeout_s, reference, min_cosine) for at, row in zip(offsets, picks)]
        results = await asyncio.gather(*jobs)
        seconds = time.perf_counter() - start
        after = await _metrics(session, url)
    outcomes = Counter(r["outcome"] for r in results)
    done_ms = [r["ms"] for r in results if r["outcome"] == "ok"]
    batches = _batch_diff(before, after, "batch_requests")
    level = {"offered_rps": rate, "sent": len(results), "ok": outcomes["ok"],
             "errors": outcomes["error"], "timeouts": outcomes["timeout"],
             "mismatched": outcomes["mismatch"], "seconds": seconds,
             "achieved_rps": outcomes["ok"] / seconds if seconds else 0.0,
             "texts_per_s": sum(r.get("texts", 0) for r in results
                                if r["outcome"] == "ok") / seconds if seconds else 0.0,
             "error_kinds": dict(Counter(r.get("error") for r in results if r.get("error"))),
             "batch_requests": batches, "mean_batch_requests": _mean_size(batches),
             "forward_rows": _batch_diff(before, after, "forward_rows")}
    level.update(percentiles(done_ms) if done_ms else
                 {"p50_ms": None, "p95_ms": None, "p99_ms": None})
    return level


def run_load(url: str, settings: LoadSettings, texts: Sequence[str],
             reference: dict[str, np.ndarray] | None = None,
             min_cosine: float = 0.9999) -> list[dict]:
    """One level per rate, in the order given; never raises for a dead or failing server (its
    requests count as errors and timeouts), so a crash mid-run still returns every level."""
    rng = np.random.default_rng(settings.seed)
    return [asyncio.run(_level(url.rstrip("/"), rate, texts, settings, rng, reference,
                               min_cosine)) for rate in settings.rates]

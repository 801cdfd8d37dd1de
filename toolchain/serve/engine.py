"""The serving engine: LitServe runs the model in its own worker process(es) and gathers
requests into dynamic batches (``max_batch_requests`` within ``max_wait_ms``); each batch's
texts are cut into forward passes by token budget (``toolchain.serve.batching``).

HTTP routes (the API process, ``EmbeddingSpec``): POST /v1/embeddings (OpenAI), POST /embed
(TEI), GET /health (LitServe's readiness: 200 once the model is loaded, else 503), GET /live
(liveness), GET /metrics (request, error and batch-size counts, JSON).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import Counter, OrderedDict

import litserve as ls
import numpy as np
from fastapi import Request, Response
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem

from toolchain.atomic import read_manifest
from toolchain.serve.batching import token_groups, trim_to_rows
from toolchain.serve.requests import (BadRequest, Limits, Payload, error_body, openai_payload,
                                      parse_json, tei_payload)
from toolchain.serve.settings import ServeSettings

SEEN_BATCHES = 10_000  # batch ids remembered so a batch of k requests counts once


def embed_payloads(embedder, payloads: list[Payload], token_budget: int,
                   max_rows: int) -> list[dict]:
    """One engine batch: every request's texts tokenised together, run in forward passes
    grouped by length, and handed back per request, in request and text order."""
    texts = [text for payload in payloads for text in payload.texts]
    batch = embedder.tokenize(texts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(axis=1)
    groups = token_groups(lengths.tolist(), token_budget, max_rows)
    vectors: np.ndarray | None = None
    for rows in groups:
        out = embedder.run(*trim_to_rows(ids, mask, rows))
        if vectors is None:
            vectors = np.empty((len(texts), out.shape[1]), dtype=np.float32)
        vectors[rows] = out
    info = {"id": uuid.uuid4().hex, "requests": len(payloads), "texts": len(texts),
            "forwards": [len(g) for g in groups]}
    results, start = [], 0
    for payload in payloads:
        end = start + len(payload.texts)
        results.append({"vectors": vectors[start:end], "tokens": int(lengths[start:end].sum()),
                        "batch": info})
        start = end
    return results


class EmbeddingAPI(ls.LitAPI):
    """The model side (a LitServe inference worker): Embedder.open in setup, batches in
    predict. Requests arrive already checked (``EmbeddingSpec``)."""

    def __init__(self, settings: ServeSettings) -> None:
        super().__init__(max_batch_size=settings.max_batch_requests,
                         batch_timeout=settings.max_wait_ms / 1e3,
                         spec=EmbeddingSpec(settings))
        self.settings = settings

    def setup(self, device) -> None:
        from toolchain.embedder import Embedder

        self.embedder = Embedder.open(self.settings.artifact, provider="cpu",
                                      threads=self.settings.threads)

    def decode_request(self, request: Payload, **kwargs) -> Payload:
        return request

    def batch(self, inputs: list[Payload]) -> list[Payload]:
        return inputs

    def predict(self, x, **kwargs):
        many = isinstance(x, list)  # max_batch_requests 1: LitServe passes one request
        out = embed_payloads(self.embedder, x if many else [x], self.settings.token_budget,
                             self.settings.max_rows)
        return out if many else out[0]

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: dict, **kwargs) -> dict:
        return output


class ServerStats:
    """Counts of one API process, served at /metrics."""

    def __init__(self) -> None:
        self.started = time.time()
        self.counts: Counter = Counter()
        self.batch_requests: Counter = Counter()
        self.forward_rows: Counter = Counter()
        self._seen: OrderedDict = OrderedDict()

    def record_batch(self, info: dict) -> None:
        if info["id"] in self._seen:
            return
        self._seen[info["id"]] = None
        if len(self._seen) > SEEN_BATCHES:
            self._seen.popitem(last=False)
        self.counts["batches"] += 1
        self.batch_requests[info["requests"]] += 1
        self.forward_rows.update(info["forwards"])

    def as_dict(self) -> dict:
        return {"uptime_s": time.time() - self.started, **self.counts,
                "batch_requests": {str(k): v for k, v in sorted(self.batch_requests.items())},
                "forward_rows": {str(k): v for k, v in sorted(self.forward_rows.items())}}


class EmbeddingSpec(LitSpec):
    """The HTTP side (LitServe API process): checks, queues and formats requests."""

    def __init__(self, settings: ServeSettings) -> None:
        super().__init__()
        self.api_path = "/v1/embeddings"  # the engine's request queue is keyed by this
        manifest = read_manifest(settings.artifact, verify=False)
        self.model_name = f"{manifest.get('variant')}-{settings.artifact.name}"
        self.limits = Limits(settings.max_texts, settings.max_body_bytes,
                             {"document": None, **settings.prompts},
                             manifest.get("embedding_dim"))
        self.wait_s = settings.timeout_s + 5.0  # LitServe answers 504 at timeout_s itself
        self.stats = ServerStats()
        self.add_endpoint("/v1/embeddings", self.openai_endpoint, ["POST"])
        self.add_endpoint("/embed", self.tei_endpoint, ["POST"])
        self.add_endpoint("/metrics", self.metrics_endpoint, ["GET"])
        self.add_endpoint("/live", self.live_endpoint, ["GET"])

    def decode_request(self, request, context_kwargs=None):
        return request

    def encode_response(self, output, context_kwargs=None):
        return output

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise BadRequest(413, f"request body is {declared} bytes; this server takes at "
                                  f"most {self.limits.max_body_bytes} (--max-body-bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise BadRequest(413, f"request body exceeds {self.limits.max_body_bytes} "
                                      f"bytes (--max-body-bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _embed(self, payload: Payload) -> dict:
        uid, event = uuid.uuid4(), asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        self.request_queue.put_nowait((self.response_queue_id, uid, time.monotonic(), payload))
        try:
            await asyncio.wait_for(event.wait(), self.wait_s)
        except asyncio.TimeoutError:  # the worker died: answer instead of hanging
            self.response_buffer.pop(uid, None)
            raise BadRequest(504, f"no answer from the model worker within {self.wait_s:.0f} s")
        response, status = self.response_buffer.pop(uid).response
        if status == LitAPIStatus.ERROR:
            code = getattr(response, "status_code", 500)
            raise BadRequest(code, str(getattr(response, "detail", "") or response))
        self.stats.record_batch(response["batch"])
        return response

    async def _handle(self, request: Request, api: str, parse) -> Response:
        try:
            payload = parse(parse_json(await self._body(request), self.limits), self.limits)
            result = await self._embed(payload)
        except BadRequest as err:
            self.stats.counts[f"status_{err.status}"] += 1
            return Response(json.dumps(error_body(api, err)), status_code=err.status,
                            media_type="application/json")
        self.stats.counts["requests"] += 1
        self.stats.counts["texts"] += len(payload.texts)
        body = (self._openai_body(payload, result) if api == "openai"
                else result["vectors"].tolist())
        return Response(json.dumps(body), media_type="application/json")

    def _openai_body(self, payload: Payload, result: dict) -> dict:
        def encoded(vector: np.ndarray):
            if payload.base64:  # OpenAI clients decode little-endian float32
                return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            return vector.tolist()

        data = [{"object": "embedding", "index": i, "embedding": encoded(v)}
                for i, v in enumerate(result["vectors"])]
        return {"object": "list", "data": data, "model": payload.model or self.model_name,
                "usage": {"prompt_tokens": result["tokens"], "total_tokens": result["tokens"]}}

    async def openai_endpoint(self, request: Request) -> Response:
        return await self._handle(request, "openai", openai_payload)

    async def tei_endpoint(self, request: Request) -> Response:
        return await self._handle(request, "tei", tei_payload)

    async def metrics_endpoint(self) -> dict:
        return self.stats.as_dict()

    async def live_endpoint(self) -> dict:
        return {"status": "alive"}


def build_server(settings: ServeSettings) -> ls.LitServer:
    """A LitServer over the artifact (not started)."""
    return ls.LitServer(EmbeddingAPI(settings), accelerator="cpu", devices=1,
                        workers_per_device=settings.workers, timeout=settings.timeout_s,
                        track_requests=False)


def serve(settings: ServeSettings, log_level: str = "warning") -> None:
    """Start the server and block; SIGTERM and Ctrl+C shut it down gracefully (LitServe stops
    its API and worker processes)."""
    import os
    import signal

    main_pid = os.getpid()

    def stop(signum, frame):
        if os.getpid() == main_pid:
            raise KeyboardInterrupt  # LitServe's run() shuts down on KeyboardInterrupt
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked API process: plain exit
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    build_server(settings).run(host=settings.host, port=settings.port, num_api_servers=1,
                               log_level=log_level, generate_client_file=False)

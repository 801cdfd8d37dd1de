"""`poolattn serve` as users run it: a real LitServe server in its own process on loopback
(127.0.0.1) over a real tiny ONNX export; every bad request is a 4xx with a clear message,
concurrent clients each get their own vectors in order, vectors equal Embedder.open's."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import TEXTS
from test_export_fixtures import cached_export, one_thread  # noqa: F401
from toolchain.data.training import format_query
from toolchain.embedder import Embedder
from toolchain.serve.batching import token_groups, trim_to_rows
from toolchain.serve.process import ServerProcess, http_status

MAX_TEXTS, MAX_BODY = 8, 4000
PROMPT = "Find the passage"
OPTIONS = ["--threads", "1", "--max-texts", str(MAX_TEXTS), "--max-body-bytes", str(MAX_BODY),
           "--max-wait-ms", "50", "--token-budget", "64", "--prompt", f"q={PROMPT}"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return cached_export(tmp_path_factory, "tiny-qwen2", "m5") / "onnx-fp32"


@pytest.fixture(scope="module")
def embedder(artifact):
    return Embedder.open(artifact, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def server(artifact, tmp_path_factory):
    process = ServerProcess(artifact, options=OPTIONS,
                            log=tmp_path_factory.mktemp("serve") / "server.log").start()
    yield process
    assert process.stop() == 0  # graceful: SIGTERM -> exit 0, every child gone
    assert http_status(process.url + "/live", timeout=1) is None


def post(url: str, body, raw: bytes | None = None) -> tuple[int, object]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


BAD = [  # (path, body or raw bytes, status, words the message must contain)
    ("/v1/embeddings", {"input": ["ok", 3]}, 422, "input[1] must be a string"),
    ("/v1/embeddings", {"input": [["nested"]]}, 422, "input[0] must be a string"),
    ("/v1/embeddings", {"input": 7}, 422, "string or a list of strings"),
    ("/v1/embeddings", {"input": []}, 422, "empty list"),
    ("/v1/embeddings", {"input": ["t"] * (MAX_TEXTS + 1)}, 413, f"at most {MAX_TEXTS}"),
    ("/v1/embeddings", {"input": "x" * (MAX_BODY + 10)}, 413, f"at most {MAX_BODY}"),
    ("/v1/embeddings", {"input": "x", "prompt_name": "nope"}, 422, "unknown prompt_name 'nope'"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
    ("/v1/embeddings", {"inputs": "x"}, 422, "missing field 'input'"),
    ("/v1/embeddings", b"{not json", 400, "not valid JSON"),
    ("/v1/embeddings", b"[1, 2]", 422, "must be a JSON object"),
    ("/embed", {"inputs": [None]}, 422, "inputs[0] must be a string"),
    ("/embed", {"inputs": []}, 422, "empty list"),
    ("/embed", {"inputs": ["t"] * (MAX_TEXTS + 1)}, 413, f"at most {MAX_TEXTS}"),
    ("/embed", {"inputs": "x", "prompt_name": "nope"}, 422, "unknown prompt_name"),
    ("/embed", {"inputs": "x", "normalize": False}, 422, "normalize must be true"),
]


@pytest.mark.parametrize("path,body,status,words", BAD, ids=[f"{p}-{w}" for p, _, _, w in BAD])
def test_bad_request_is_a_clear_4xx(server, path, body, status, words):
    raw = body if isinstance(body, bytes) else None
    code, answer = post(server.url + path, body, raw)
    assert code == status
    message = answer["error"]["message"] if path == "/v1/embeddings" else answer["error"]
    assert words in message


def test_server_still_serves_after_bad_requests_and_counts_them(server):
    post(server.url + "/v1/embeddings", {"input": []})
    code, answer = post(server.url + "/v1/embeddings", {"input": "still here"})
    assert code == 200 and len(answer["data"]) == 1
    metrics = json.loads(urllib.request.urlopen(server.url + "/metrics", timeout=10).read())
    assert metrics["status_422"] >= 1 and metrics["requests"] >= 1
    assert http_status(server.url + "/health") == 200 and http_status(server.url + "/live") == 200


def test_vectors_equal_embedder_open(server, embedder):
    expected = embedder.encode(TEXTS)
    code, answer = post(server.url + "/v1/embeddings", {"input": TEXTS, "model": "mine"})
    assert code == 200 and answer["model"] == "mine"
    assert [d["index"] for d in answer["data"]] == list(range(len(TEXTS)))
    openai = np.array([d["embedding"] for d in answer["data"]], dtype=np.float32)
    assert answer["usage"]["prompt_tokens"] == int(embedder.tokenize(TEXTS)["attention_mask"].sum())
    code, tei = post(server.url + "/embed", {"inputs": TEXTS})
    assert code == 200
    code, packed = post(server.url + "/v1/embeddings", {"input": TEXTS,
                                                        "encoding_format": "base64"})
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
                        for d in packed["data"]])
    for served in (openai, np.array(tei, dtype=np.float32), decoded):
        assert served.shape == expected.shape
        assert cosines(served, expected).min() >= 0.9999


def test_prompt_name_applies_the_instruction(server, embedder):
    code, answer = post(server.url + "/embed", {"inputs": TEXTS[:2], "prompt_name": "q"})
    assert code == 200
    expected = embedder.encode([format_query(t, PROMPT) for t in TEXTS[:2]])
    plain = embedder.encode(TEXTS[:2])
    served = np.array(answer, dtype=np.float32)
    assert cosines(served, expected).min() >= 0.9999
    assert cosines(served, plain).min() < 0.9999  # the instruction changed the vectors


def test_concurrent_clients_get_their_own_vectors_in_order(server, embedder):
    pool = TEXTS + [f"text number {i} about {w}" for i, w in enumerate(["cats", "ships", "tea"])]
    reference = dict(zip(pool, embedder.encode(pool)))
    clients = 16
    requests = [[pool[(c + k) % len(pool)] for k in range(1 + c % 4)] for c in range(clients)]
    results: list = [None] * clients
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        barrier.wait()
        results[index] = post(server.url + "/v1/embeddings", {"input": requests[index]})

    before = json.loads(urllib.request.urlopen(server.url + "/metrics", timeout=10).read())
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for texts, (code, answer) in zip(requests, results):
        assert code == 200
        served = np.array([d["embedding"] for d in answer["data"]], dtype=np.float32)
        assert cosines(served, np.stack([reference[t] for t in texts])).min() >= 0.9999
    after = json.loads(urllib.request.urlopen(server.url + "/metrics", timeout=10).read())
    formed = {int(k): v - before["batch_requests"].get(k, 0)
              for k, v in after["batch_requests"].items()}
    assert sum(k * v for k, v in formed.items()) == clients  # every request in one batch
    assert max(k for k, v in formed.items() if v > 0) > 1  # and requests were batched together


def test_token_groups_keep_short_texts_apart_from_long_ones():
    lengths = [3, 40, 4, 5, 39, 2, 100]
    groups = token_groups(lengths, token_budget=80, max_rows=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert len(group) <= 3 and (len(group) * longest <= 80 or len(group) == 1)
    assert [6] in groups  # over budget alone: its own pass
    assert {5, 0, 2} in [set(g) for g in groups]  # the three shortest together


@pytest.mark.parametrize("rows", [[0, 2], [3], [1, 2, 0]])
def test_trim_to_rows_equals_tokenising_the_rows_alone(embedder, rows):
    batch = embedder.tokenize(TEXTS)
    ids, mask = trim_to_rows(batch["input_ids"], batch["attention_mask"], rows)
    alone = embedder.tokenize([TEXTS[i] for i in rows])
    np.testing.assert_array_equal(ids, alone["input_ids"])
    np.testing.assert_array_equal(mask, alone["attention_mask"])

"""Request bodies of the two embedding APIs, checked before anything is queued: a bad request is
a 4xx with a message naming the field, and never reaches (or fails) a batch of other clients.

OpenAI ``POST /v1/embeddings``: {"input": str | [str], "model"?, "encoding_format"?:
"float" | "base64", "dimensions"?, "user"?, "prompt_name"?}.
TEI ``POST /embed``: {"inputs": str | [str], "normalize"?: true, "truncate"?,
"truncation_direction"?: "Right", "prompt_name"?}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from toolchain.data.training import format_query

DOCUMENT_PROMPT = "document"  # the built-in prompt: the text as it is


class BadRequest(Exception):
    """A client error: ``status`` (4xx) and a message naming the field."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass
class Payload:
    """What goes to the engine: the texts with their prompt applied."""

    texts: list[str]
    api: str            # "openai" | "tei"
    base64: bool = False
    model: str | None = None


@dataclass
class Limits:
    max_texts: int
    max_body_bytes: int
    prompts: dict[str, str | None]
    dimensions: int | None = None


def parse_json(body: bytes, limits: Limits) -> dict:
    """The body as a JSON object. Raises BadRequest: too large (413), not JSON (400), not an
    object (422)."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, f"request body is {len(body)} bytes; this server takes at most "
                              f"{limits.max_body_bytes} (--max-body-bytes)")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _texts(data: dict, key: str, limits: Limits) -> list[str]:
    if key not in data:
        raise BadRequest(422, f"missing field {key!r} (a string or a list of strings)", key)
    value = data[key]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise BadRequest(422, f"{key} must be a string or a list of strings, got "
                              f"{type(value).__name__}", key)
    if not texts:
        raise BadRequest(422, f"{key} is an empty list; give at least one text", key)
    if len(texts) > limits.max_texts:
        raise BadRequest(413, f"{key} has {len(texts)} texts; this server takes at most "
                              f"{limits.max_texts} per request (--max-texts)", key)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(422, f"{key}[{index}] must be a string, got "
                                  f"{type(text).__name__} (token-id inputs are not supported)",
                             f"{key}[{index}]")
    return texts


def _prompted(texts: list[str], data: dict, limits: Limits) -> list[str]:
    name = data.get("prompt_name")
    if name is None:
        return texts
    if not isinstance(name, str) or name not in limits.prompts:
        raise BadRequest(422, f"unknown prompt_name {name!r}; known: "
                              f"{', '.join(sorted(limits.prompts))}", "prompt_name")
    instruction = limits.prompts[name]
    return [format_query(t, instruction) for t in texts] if instruction else texts


def openai_payload(data: dict, limits: Limits) -> Payload:
    """Check an OpenAI embeddings body. Raises BadRequest."""
    texts = _texts(data, "input", limits)
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest(422, f"encoding_format must be 'float' or 'base64', got {encoding!r}",
                         "encoding_format")
    dims = data.get("dimensions")
    if dims is not None and dims != limits.dimensions:
        raise BadRequest(422, f"dimensions {dims!r}: this model returns {limits.dimensions} "
                              f"(no truncated embeddings)", "dimensions")
    model = data.get("model")
    return Payload(_prompted(texts, data, limits), "openai", encoding == "base64",
                   model if isinstance(model, str) else None)


def tei_payload(data: dict, limits: Limits) -> Payload:
    """Check a TEI embed body. Raises BadRequest."""
    texts = _texts(data, "inputs", limits)
    if data.get("normalize", True) is not True:
        raise BadRequest(422, "normalize must be true: this model's graph L2-normalises its "
                              "output", "normalize")
    if data.get("truncation_direction", "Right") not in ("Right", "right"):
        raise BadRequest(422, "truncation_direction must be 'Right' (the artifact's contract)",
                         "truncation_direction")
    return Payload(_prompted(texts, data, limits), "tei")


def error_body(api: str, err: BadRequest) -> dict:
    """The error JSON each API's clients expect."""
    if api == "openai":
        return {"error": {"message": err.message, "type": "invalid_request_error",
                          "param": err.param, "code": None}}
    kind = "Validation" if err.status in (413, 422) else "Invalid"
    return {"error": err.message, "error_type": kind}

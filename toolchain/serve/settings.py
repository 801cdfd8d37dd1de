"""What `poolattn serve` runs with: one dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import ToolchainError

# litserve's uvicorn binding accepts only these three hosts
HOSTS = ("127.0.0.1", "0.0.0.0", "::")


@dataclass
class ServeSettings:
    """Server knobs (the `poolattn serve` options; docs/serve.md explains each)."""

    artifact: Path
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None          # intra-op threads of the model (None: all cores)
    max_batch_requests: int = 32        # requests the engine gathers into one batch
    max_wait_ms: float = 5.0            # how long the engine waits to fill a batch
    token_budget: int = 4096            # padded tokens per forward pass (rows x longest row)
    max_rows: int = 64                  # texts per forward pass
    max_texts: int = 256                # texts per request
    max_body_bytes: int = 2_000_000     # request body size
    timeout_s: float = 30.0             # a request waiting longer gets 504
    workers: int = 1                    # model copies (each a process with its own threads)
    prompts: dict[str, str] = field(default_factory=dict)  # prompt_name -> instruction

    def __post_init__(self) -> None:
        self.artifact = Path(self.artifact)
        if not (self.artifact / "manifest.json").is_file():
            raise ToolchainError(f"{self.artifact}: not an artifact (no manifest.json); give an "
                                 f"onnx-<profile> or merged directory")
        if self.host not in HOSTS:
            raise ToolchainError(f"--host must be one of {', '.join(HOSTS)} (litserve binds only "
                                 f"these), got {self.host!r}")
        if not 1024 <= self.port <= 65535:
            raise ToolchainError(f"--port must be in 1024..65535, got {self.port}")
        for name in ("max_batch_requests", "token_budget", "max_rows", "max_texts",
                     "max_body_bytes", "workers"):
            if getattr(self, name) < 1:
                raise ToolchainError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.timeout_s <= 0:
            raise ToolchainError(f"max_wait_ms must be >= 0 and timeout_s > 0, got "
                                 f"{self.max_wait_ms}, {self.timeout_s}")


def parse_prompts(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["query=Given a question, ...", ...]`` -> {name: instruction}.

    Raises:
        ToolchainError: an item without ``=`` or with an empty name.
    """
    prompts = {}
    for item in items:
        name, sep, instruction = item.partition("=")
        if not sep or not name.strip():
            raise ToolchainError(f"--prompt {item!r}: expected NAME=INSTRUCTION")
        prompts[name.strip()] = instruction
    return prompts

"""One embedding interface over an ONNX artifact (ONNX Runtime) and a merged PyTorch model dir.

The bench compares like with like through it: the same tokenisation contract (EOS appended,
the artifact's padding side and max length), the same batching, unit-norm float32 output.

    emb = Embedder.from_artifact("runs/tiny-mistral/m5/onnx-fp32")
    vectors = emb.encode(["a text", "another"])          # (2, H) float32, unit norm
    batch = emb.tokenize(texts); emb.run(batch["input_ids"], batch["attention_mask"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from toolchain.atomic import read_manifest
from toolchain.errors import ToolchainError
from toolchain.tokenization import TextTokenizer

ARTIFACT_KIND = "onnx_artifact"
MODEL_DIR_KIND = "embedding_model"
# Other PyTorch model-dir kinds -> "module:function(path, device, threads) -> Embedder"
MODEL_DIR_OPENERS = {"sentence_encoder": "toolchain.peer:open_peer_embedder"}
TOKENIZER_DIR = "tokenizer"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def resolve_threads(threads: int | None) -> int:
    return int(threads) if threads else (os.cpu_count() or 1)


def ort_session(model, session: dict | None, provider: str = "cpu", threads: int | None = None,
                config: dict | None = None):
    """An ORT InferenceSession over a path or serialized model; returns (session, provider used).

    Args:
        model: path to model.onnx, or model bytes.
        session: the manifest's ``session`` settings (graph_optimization_level).
        provider: "auto" (CUDA when onnxruntime-gpu sees a GPU, else CPU), "cpu" or "cuda".
        threads: intra-op threads; None = all cores.
        config: extra ORT session config entries.

    Raises:
        ToolchainError: unknown provider, or "cuda" asked for but not usable.
    """
    import onnxruntime as ort

    from toolchain.export.optimize import session_options

    if provider not in ("auto", *PROVIDERS):
        raise ToolchainError(f"provider must be auto, cpu or cuda, got {provider!r}")
    wanted = ["cpu"]
    if provider in ("auto", "cuda") and PROVIDERS["cuda"] in ort.get_available_providers():
        wanted = ["cuda", "cpu"]
    if provider == "cuda" and wanted[0] != "cuda":
        raise ToolchainError("provider cuda: onnxruntime has no CUDAExecutionProvider "
                             "(install the gpu extra: make venv ORT_EXTRA=gpu)")
    options = session_options(session, resolve_threads(threads))
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    model = str(model) if isinstance(model, Path) else model
    sess = ort.InferenceSession(model, options, providers=[PROVIDERS[p] for p in wanted])
    used = "cuda" if sess.get_providers()[0] == PROVIDERS["cuda"] else "cpu"
    if provider == "cuda" and used != "cuda":
        raise ToolchainError("provider cuda: the CUDA provider failed to start (see ORT log)")
    return sess, used


class Embedder:
    """Embeds texts with an ONNX artifact or a PyTorch merged model; see module docstring.

    Attributes:
        name: e.g. "m5-onnx-fp32" or "m5-torch-cpu".
        kind: "onnx" or "torch".
        manifest: the artifact's (or model dir's) manifest.
        provider: "cpu" or "cuda" (the device actually used).
        threads: intra-op threads.
    """

    def __init__(self, name: str, kind: str, manifest: dict, tokenizer: TextTokenizer,
                 runner: Callable[[np.ndarray, np.ndarray], np.ndarray], provider: str,
                 threads: int) -> None:
        self.name, self.kind, self.manifest = name, kind, manifest
        self.tokenizer, self._runner = tokenizer, runner
        self.provider, self.threads = provider, threads

    @classmethod
    def from_artifact(cls, path: str | Path, provider: str = "auto",
                      threads: int | None = None) -> "Embedder":
        """Open an ONNX artifact directory (every file's sha256 is checked first).

        Raises:
            ToolchainError: tampered/missing files, not an ONNX artifact, provider problems.
        """
        from toolchain.modeling.backbone import load_saved_tokenizer

        path = Path(path)
        manifest = read_manifest(path)
        if manifest.get("kind") != ARTIFACT_KIND:
            raise ToolchainError(f"{path}/manifest.json: kind {manifest.get('kind')!r} is not "
                                 f"{ARTIFACT_KIND!r}")
        hf = load_saved_tokenizer(path / TOKENIZER_DIR)
        tokenizer = TextTokenizer(hf, int(manifest["max_length"]), manifest["padding_side"])
        for field in ("eos_token_id", "pad_token_id"):
            if getattr(tokenizer, field) != manifest[field]:
                raise ToolchainError(f"{path}/{TOKENIZER_DIR}: {field} {getattr(tokenizer, field)} "
                                     f"differs from the manifest's {manifest[field]}")
        session, used = ort_session(path / manifest["model_file"], manifest.get("session"),
                                    provider, threads)
        output = manifest["output_names"][0]

        def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            feeds = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                     "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
            return session.run([output], feeds)[0]

        name = f"{manifest['variant']}-onnx-{manifest['profile']['name']}"
        return cls(name, "onnx", manifest, tokenizer, run, used, resolve_threads(threads))

    @classmethod
    def from_model_dir(cls, path: str | Path, device: str = "cpu",
                       threads: int | None = None) -> "Embedder":
        """Open a merged model directory (`poolattn merge` output, or a baseline built by
        `poolattn baseline`) with PyTorch; other kinds in ``MODEL_DIR_OPENERS`` (the MiniLM
        peer) open through their own loader."""
        import importlib

        import torch

        from toolchain.modeling.model import load_embedding_model

        kind = read_manifest(Path(path), verify=False).get("kind", MODEL_DIR_KIND)
        if kind != MODEL_DIR_KIND:
            if kind not in MODEL_DIR_OPENERS:
                raise ToolchainError(f"{path}/manifest.json: kind {kind!r} is not a model "
                                     f"directory ({MODEL_DIR_KIND}, "
                                     f"{', '.join(MODEL_DIR_OPENERS)})")
            module, _, function = MODEL_DIR_OPENERS[kind].partition(":")
            return getattr(importlib.import_module(module), function)(path, device, threads)
        if threads:
            torch.set_num_threads(int(threads))
        model = load_embedding_model(path).to(device).eval()
        manifest = read_manifest(Path(path), verify=False)  # verified by the load above

        def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=device)
                mask = torch.as_tensor(np.asarray(attention_mask, dtype=np.int64), device=device)
                return model(ids, mask).float().cpu().numpy()

        name = f"{manifest['variant']}-torch-{device}"
        return cls(name, "torch", manifest, model.tokenizer, run, device, torch.get_num_threads())

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """{"input_ids", "attention_mask"}: int64 (B, T) arrays under the artifact's contract."""
        return {k: v.numpy() for k, v in self.tokenizer(texts).items()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embed a pre-tokenised batch -> (B, H) float32 (what the latency harness times)."""
        return self._runner(input_ids, attention_mask)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts -> (N, H) float32, unit norm, in input order.

        Texts are batched longest first (less padding; results do not depend on batch
        partners beyond the profile's invariance bound).
        """
        if isinstance(texts, str) or len(texts) == 0:
            self.tokenizer(texts)  # raises the contract's error
        if batch_size < 1:
            raise ToolchainError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenize([texts[i] for i in rows])
            emb = self.run(batch["input_ids"], batch["attention_mask"])
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[rows] = emb
        return out

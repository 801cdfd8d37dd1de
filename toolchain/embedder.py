"""One embedding interface over an ONNX artifact (ONNX Runtime) and a merged PyTorch model dir.

The bench compares like with like through it: the same tokenisation contract (EOS appended,
the artifact's padding side and max length), the same batching, unit-norm float32 output.

    emb = Embedder.open("runs/tiny-mistral/m5/onnx-fp32")   # or a model directory
    vectors = emb.encode(["a text", "another"])          # (2, H) float32, unit norm
    batch = emb.tokenize(texts); emb.run(batch["input_ids"], batch["attention_mask"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from toolchain.atomic import read_manifest
from toolchain.contract import ManifestHeader
from toolchain.errors import ToolchainError
from toolchain.ort_session import ort_session, resolve_threads
from toolchain.tokenization import (TOKENIZER_FILE, EmptyTexts, TextTokenizer, check_empty_policy,
                                    check_texts)

ARTIFACT_KIND = "onnx_artifact"
MODEL_DIR_KIND = "embedding_model"
# Other PyTorch model-dir kinds -> "module:function(path, device, threads) -> Embedder"
MODEL_DIR_OPENERS = {"sentence_encoder": "toolchain.peer:open_peer_embedder"}
LEGACY_TOKENIZER_DIR = "tokenizer"  # artifacts before the top-level tokenizer.json (issue 28)


class Embedder:
    """Embeds texts with an ONNX artifact or a PyTorch merged model; see module docstring.

    Attributes:
        name: e.g. "m5-onnx-fp32" or "m5-torch-cpu".
        kind: "onnx" or "torch".
        manifest: the artifact's (or model dir's) manifest.
        provider: "cpu" or "cuda" (the device actually used).
        threads: intra-op threads.
        path: the artifact or model directory it was opened from (None if built in memory).
    """

    def __init__(self, name: str, kind: str, manifest: dict, tokenizer: TextTokenizer,
                 runner: Callable[[np.ndarray, np.ndarray], np.ndarray], provider: str,
                 threads: int) -> None:
        self.name, self.kind, self.manifest = name, kind, manifest
        self.tokenizer, self._runner = tokenizer, runner
        self.provider, self.threads = provider, threads
        self.empty_texts: EmptyTexts = "embed"
        self.path: Path | None = None

    @classmethod
    def open(cls, path: str | Path, provider: str = "auto", threads: int | None = None,
             empty_texts: EmptyTexts = "embed") -> "Embedder":
        """Open any artifact the toolchain writes, by its manifest's kind: an ONNX artifact with
        ONNX Runtime (``provider``), a model directory with PyTorch (on CUDA when ``provider``
        asks for it and torch sees a GPU, else CPU).

        Args:
            empty_texts: "embed" (an empty text embeds as the EOS-only sequence) or "refuse".

        Raises:
            ToolchainError: no manifest, an unknown kind, or what the opener raises.
        """
        kind = read_manifest(Path(path), verify=False).get("kind", MODEL_DIR_KIND)
        if kind == ARTIFACT_KIND:
            embedder = cls.from_artifact(path, provider=provider, threads=threads)
        else:
            embedder = cls.from_model_dir(path, device=_torch_device(provider), threads=threads)
        embedder.empty_texts = check_empty_policy(empty_texts)
        embedder.path = Path(path)
        return embedder

    @classmethod
    def from_artifact(cls, path: str | Path, provider: str = "auto",
                      threads: int | None = None) -> "Embedder":
        """Open an ONNX artifact directory (every file's sha256 is checked first).

        Raises:
            ToolchainError: tampered/missing files, not an ONNX artifact, provider problems.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.get("kind") != ARTIFACT_KIND:
            raise ToolchainError(f"{path}/manifest.json: kind {manifest.get('kind')!r} is not "
                                 f"{ARTIFACT_KIND!r}")
        header = ManifestHeader.read(manifest, path / "manifest.json")
        tokenizer = artifact_tokenizer(path, header)
        session, used = ort_session(path / manifest["model_file"], manifest.get("session"),
                                    provider, threads)
        output = manifest["output_names"][0]

        def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            feeds = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                     "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
            return session.run([output], feeds)[0]

        name = f"{header.variant.name}-onnx-{manifest['profile']['name']}"
        embedder = cls(name, "onnx", manifest, tokenizer, run, used, resolve_threads(threads))
        embedder.path = path
        return embedder

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
        check_texts(texts, self.empty_texts)
        return {k: v.numpy() for k, v in self.tokenizer(texts).items()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embed a pre-tokenised batch -> (B, H) float32 (what the latency harness times)."""
        return self._runner(input_ids, attention_mask)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts -> (N, H) float32, unit norm, in input order.

        Texts are batched longest first (less padding; results do not depend on batch
        partners beyond the profile's invariance bound).
        """
        check_texts(texts, self.empty_texts)
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


def artifact_tokenizer(path: Path, header: ManifestHeader) -> TextTokenizer:
    """The artifact's own top-level tokenizer.json, opened as a consumer opens it, checked
    against the manifest's contract (max_length, padding side, EOS, pad).

    Artifacts written before the contract moved into the file (a ``tokenizer/`` directory of HF
    files) are read the old way: their tokenizer is rebuilt from the HF files.

    Raises:
        ToolchainError: a contract field of the file differs from the manifest's.
    """
    file = path / TOKENIZER_FILE
    if not file.is_file() and (path / LEGACY_TOKENIZER_DIR).is_dir():
        from toolchain.modeling.backbone import load_saved_tokenizer

        hf = load_saved_tokenizer(path / LEGACY_TOKENIZER_DIR)
        tokenizer = TextTokenizer(hf, header.max_length, header.padding_side)
    else:
        tokenizer = TextTokenizer.from_file(file)
    for field in ("max_length", "padding_side", "eos_token_id", "pad_token_id"):
        if getattr(tokenizer, field) != getattr(header, field):
            raise ToolchainError(f"{file}: {field} {getattr(tokenizer, field)!r} differs from "
                                 f"the manifest's {getattr(header, field)!r}")
    return tokenizer


def _torch_device(provider: str) -> str:
    if provider not in ("auto", "cpu", "cuda"):
        raise ToolchainError(f"provider must be auto, cpu or cuda, got {provider!r}")
    if provider == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if provider == "cuda":
        raise ToolchainError("provider cuda: torch sees no GPU")
    return "cpu"

"""PyTorch merged model -> one ONNX graph (torch.onnx.export, dynamo, opset 18).

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence) and
returns ``sentence_embedding`` (B, H) float32, unit norm. Position ids are computed inside the
graph from the mask (EmbeddingModel.features: cumsum - 1), so left and right padding both work.
The attention mode is whatever the backbone's config fixes at export time: it is traced into
the graph's mask construction, and `verify` probes it on the graph.

The input-independent part of the Perceiver head (the latents' normalised query projection) is
computed once here and stored as a constant; ``to_q`` and ``norm_latents`` leave the graph.

A second output, the backbone's last-layer token states, is exported and then removed from the
graph outputs: the value stays inside the graph under PROBE_VALUE, where `verify` re-exposes it
to probe the attention mode of the shipped graph itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.export.ort_fusion import fuse_for_ort
from toolchain.modeling.model import EmbeddingModel

OPSET = 18
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "sentence_embedding"  # not "embedding": collides with a dynamo-internal value name
PROBE_VALUE = "probe_last_hidden_state"
MODEL_FILE = "model.onnx"
DATA_FILE = MODEL_FILE + ".data"
# Protobuf cannot hold a model over 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_BYTES = 2**31 - 2**27


class ExportWrapper(nn.Module):
    """EmbeddingModel forward with the head's input-independent queries as a constant buffer.

    Returns (sentence_embedding (B, H), last-layer token states (B, T, H)).
    """

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model
        queries = precomputed_queries(model)
        self.has_queries = queries is not None
        if queries is not None:
            self.register_buffer("latent_queries", queries)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        features = self.model.features(input_ids, attention_mask)
        if self.has_queries:
            features["latent_queries"] = self.latent_queries  # (1, nh, n, d), constant
        pooled = self.model.head(features)["sentence_embedding"]
        return F.normalize(pooled.float(), p=2, dim=-1), features["token_embeddings"]


def precomputed_queries(model: EmbeddingModel) -> torch.Tensor | None:
    """The head's input-independent queries (e.g. (1, nh, n, d) latents), or None."""
    return model.head.precomputable_queries()


def precompute_savings(model: EmbeddingModel) -> dict:
    """MACs/FLOPs per text that the stored constant saves (independent of sequence length)."""
    if precomputed_queries(model) is None:
        return {"macs_per_text": 0, "flops_per_text": 0, "what": "nothing input-independent"}
    macs = model.head.macs(model.head_config, seq_len=1)["input_independent"]
    return {"macs_per_text": int(macs), "flops_per_text": int(2 * macs),
            "what": "latent queries: to_q(norm_latents(latents)) stored as a constant"}


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's known-harmless chatter (missing torchvision ops, axis renames)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, message=".*axis name")
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        registration.setLevel(level)


def parameter_bytes(module: nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(model: EmbeddingModel, directory: Path, seq_len: int = 8,
                fuse: bool = False) -> dict:
    """Export ``model`` to ``directory``/model.onnx (+ model.onnx.data when over 2 GiB).

    Args:
        model: an fp32 EmbeddingModel without adapters (merged).
        directory: existing output directory.
        seq_len: example sequence length for tracing (shapes stay dynamic).
        fuse: apply :func:`fuse_for_ort` to the exported graph.

    Returns:
        Export facts for the manifest: files, external data, timing, precomputed savings.

    Raises:
        ToolchainError: the exporter failed.
    """
    model = model.eval().float()
    wrapper = ExportWrapper(model).eval()
    example = torch.randint(3, model.backbone.config.vocab_size, (2, seq_len))
    mask = torch.ones_like(example)
    mask[0, : seq_len // 2] = 0  # a padded row, so padding is traced as data, not specialised
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    start = time.perf_counter()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(wrapper, (example, mask), dynamo=True, opset_version=OPSET,
                                        input_names=INPUT_NAMES,
                                        output_names=[OUTPUT_NAME, PROBE_VALUE],
                                        dynamic_shapes=dynamic, verbose=False)
    except Exception as err:  # the exporter raises many types; report one clear line
        raise ToolchainError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    exported = time.perf_counter() - start
    # fused while the probe value is still a graph output, so the rewrites keep it by name
    fusions = (fuse_for_ort(program.model, model.backbone.config.max_position_embeddings)
               if fuse else {})
    outputs = program.model.graph.outputs
    probe = [v for v in outputs if v.name == PROBE_VALUE]
    if len(probe) != 1:
        raise ToolchainError(f"exported graph has no {PROBE_VALUE} output")
    outputs.remove(probe[0])  # the value stays in the graph; only the output goes
    graph_bytes = initializer_bytes(program)
    external = graph_bytes > EXTERNAL_DATA_BYTES
    program.save(str(Path(directory) / MODEL_FILE), external_data=external)
    files = [MODEL_FILE] + ([DATA_FILE] if external else [])
    return {"files": files, "external_data": external, "export_seconds": round(exported, 2),
            "save_seconds": round(time.perf_counter() - start - exported, 2),
            "graph_weight_bytes": graph_bytes, "torch_weight_bytes": parameter_bytes(wrapper),
            "precomputed": precompute_savings(model), "fusions": fusions}


def initializer_bytes(program) -> int:
    """Bytes of the exported graph's stored tensors (what must fit under protobuf's 2 GiB)."""
    values = program.model.graph.initializers.values()
    return sum(v.const_value.nbytes for v in values if v.const_value is not None)

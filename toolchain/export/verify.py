"""`poolattn verify`: prove an ONNX artifact equals the PyTorch merged model it came from.

Checks (gates come from the artifact's profile, stored in its manifest):
1. parity, ORT vs PyTorch, on random shapes (left and right padding, 1 to max_length tokens)
   and on real texts tokenised with the artifact's own tokenizer;
2. batch and padding invariance inside ORT: each text alone vs in a padded batch, with the
   other padding side and with extra padding (a "batch" is at most ``rows_per_call`` texts, so
   a head with a large per-text working set still fits in memory, see ACTIVATION_BUDGET_BYTES);
3. no NaN/Inf, unit norm;
4. the consumer with no project code: the artifact's own poolattn_onnx.py (plain tokenizers +
   onnxruntime, both padding sides) reproduces the reference's token ids and the Embedder's
   vectors on hard texts (toolchain/deploy/consumer_check.py);
5. the attention mode, probed on the shipped graph itself: the backbone's last-layer token
   states (an internal value of model.onnx, re-exposed as an output in memory) for two rows
   that differ only in their last token, in one batch. Under causal attention the first real
   token cannot see the last one, so its state is bit-identical in both rows; under
   bidirectional attention it moves (~0.1-2 on the tiny presets). This reads the backbone inside
   the graph, before any head, so it is sound for every variant: m1-m3 pool the EOS token, which
   sees every token in both modes, so the embedding alone cannot reveal the mode there, and
   m4/m5 could hide a wrong mode behind a parity tolerance. Both rows share one batch, so even
   int8 dynamic quantization (one activation scale per tensor) leaves the causal rows equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.atomic import sha256_file
from toolchain.contract import Attention, source_model_dir
from toolchain.deploy.consumer_check import consumer_expectations, consumer_gate
from toolchain.export.profiles import Gates
from toolchain.probe_texts import PROBE_TEXTS
from toolchain.parity import compare, random_batch, repad

SHAPES = ((1, 1), (1, 9), (2, 16), (3, 31), (4, 64), (2, None))  # None: max_length
PROBE_PADS = (0, 3)
# Rows per ORT / PyTorch call are capped so that the head's per-row working set stays under this
# (the paper-size head at hidden 4096 holds ~0.6 GB a row: 16 texts at once cost ~10 GB in each
# runtime, beside two copies of the weights). Never below 2 rows: batch invariance needs partners.
ACTIVATION_BUDGET_BYTES = 2**30
MAX_ROWS_PER_CALL = 256  # above every batch verify runs: "all at once"


def probe_attention(model_path: Path, manifest: dict, tol: float) -> dict:
    """Observed attention mode of the graph at ``model_path`` (see module docstring)."""
    from toolchain.ort_session import ort_session
    from toolchain.export.onnx_export import PROBE_VALUE
    from toolchain.export.probe_output import with_probe_output

    proto = with_probe_output(model_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, manifest["vocab_size"], (1, 8))
    changed = ids.copy()
    changed[0, -1] = (ids[0, -1] - 3 + 1) % (manifest["vocab_size"] - 3) + 3
    # The probe copy lives in memory; external weights are read from beside the shipped graph.
    config = {"session.model_external_initializers_file_folder_path": str(model_path.parent)}
    session, _ = ort_session(proto.SerializeToString(), manifest.get("session"), "cpu",
                             config=config)
    deltas = []
    for pad in PROBE_PADS:
        batch = np.concatenate([ids, changed])
        batch = np.concatenate([np.full((2, pad), manifest["pad_token_id"]), batch], axis=1)
        mask = np.concatenate([np.zeros((2, pad)), np.ones((2, 8))], axis=1).astype(np.int64)
        states = session.run([PROBE_VALUE], {"input_ids": batch.astype(np.int64),
                                             "attention_mask": mask})[0]
        deltas.append(float(np.abs(states[0, pad].astype(np.float64) - states[1, pad]).max()))
    observed = {Attention.CAUSAL if d <= tol else Attention.BIDIRECTIONAL for d in deltas}
    return {"observed": str(observed.pop()) if len(observed) == 1 else "inconsistent",
            "first_token_shift": deltas, "pads": list(PROBE_PADS), "tolerance": tol}


def rows_per_call(reference, max_length: int) -> int:
    """Texts per ORT / PyTorch call: the head's per-text working set (the tensors it keeps for
    backward, counted on the meta device) within ACTIVATION_BUDGET_BYTES, at least 2."""
    import torch

    from toolchain.plan.counts import head_saved_bytes

    per_text = sum(head_saved_bytes(reference.head_config, 1, max_length, torch.float32))
    return max(2, min(MAX_ROWS_PER_CALL, ACTIVATION_BUDGET_BYTES // max(per_text, 1)))


class _Checks:
    """Runs the numeric checks, collecting every ORT output and every failed gate."""

    def __init__(self, embedder, reference, gates: Gates) -> None:
        self.embedder, self.reference, self.gates = embedder, reference, gates
        self.manifest = embedder.manifest
        self.rows_per_call = rows_per_call(reference, self.manifest["max_length"])
        self.outputs: list[np.ndarray] = []
        self.failures: list[str] = []

    def _chunked(self, run, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        step = self.rows_per_call
        return np.concatenate([run(ids[i:i + step], mask[i:i + step])
                               for i in range(0, len(ids), step)])

    def ort(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.outputs.append(self._chunked(self.embedder.run, ids, mask))
        return self.outputs[-1]

    def torch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        def run(rows: np.ndarray, rows_mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self.reference(torch.from_numpy(rows), torch.from_numpy(rows_mask)).numpy()

        return self._chunked(run, ids, mask)

    def gate(self, name: str, figures: dict, parity: bool) -> dict:
        g = self.gates
        max_abs = g.parity_max_abs if parity else g.invariance_max_abs
        min_cosine = g.parity_min_cosine if parity else g.invariance_min_cosine
        if max_abs is not None and not figures["max_abs"] <= max_abs:
            self.failures.append(f"{name}: max |diff| {figures['max_abs']:.3g} > {max_abs:g}")
        if not figures["min_cosine"] >= min_cosine:
            self.failures.append(f"{name}: min cosine {figures['min_cosine']:.7f} < {min_cosine:g}")
        return figures

    def random_shapes(self) -> dict:
        """ORT vs torch on random ids, both padding sides, 1 to max_length tokens."""
        rng = np.random.default_rng(1234)
        m = self.manifest
        rows, ours, theirs = [], [], []
        for batch, length in SHAPES:
            length = min(length or m["max_length"], m["max_length"])
            for side in ("left", "right"):
                ids, mask = random_batch(rng, batch, length, m["vocab_size"], m["pad_token_id"],
                                         side)
                ours.append(self.ort(ids, mask))
                theirs.append(self.torch(ids, mask))
                rows.append(f"{batch}x{length}{side[0]}")
        figures = compare(np.concatenate(ours), np.concatenate(theirs))
        return {**self.gate("parity (random shapes)", figures, parity=True), "shapes": rows}

    def texts(self) -> tuple[dict, dict, dict]:
        """Parity on real texts, then batch and padding invariance inside ORT."""
        tokens = self.embedder.tokenize(PROBE_TEXTS)
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        pad = self.manifest["pad_token_id"]
        batched = self.ort(ids, mask)
        parity = self.gate("parity (real texts)", compare(batched, self.torch(ids, mask)), True)
        solo = np.concatenate([self.ort(*repad(ids[i:i + 1], mask[i:i + 1], "left", 0, pad))
                               for i in range(len(ids))])
        batch_fig = self.gate("batch invariance (ORT)", compare(batched, solo), parity=False)
        padding = {}
        for side, extra in (("left", 5), ("right", 0), ("right", 5)):
            figures = compare(self.ort(*repad(ids, mask, side, extra, pad)), solo)
            padding[f"{side}+{extra}"] = self.gate(f"padding invariance (ORT, {side} +{extra})",
                                                   figures, parity=False)
        return {**parity, "texts": len(PROBE_TEXTS)}, batch_fig, padding

    def finite_and_unit_norm(self) -> tuple[bool, float]:
        everything = np.concatenate(self.outputs)
        finite = bool(np.isfinite(everything).all())
        if not finite:
            self.failures.append("NaN or Inf in ORT outputs")
        deviation = float(np.abs(np.linalg.norm(everything.astype(np.float64), axis=-1) - 1).max())
        if not deviation <= self.gates.unit_norm_tol:
            self.failures.append(f"unit norm: max | ||e|| - 1 | {deviation:.3g} > "
                                 f"{self.gates.unit_norm_tol:g}")
        return finite, deviation


def verify_artifact(artifact: str | Path, model_dir: str | Path | None = None, reference=None,
                    threads: int | None = None) -> dict:
    """Run every check on ``artifact``; returns the report ("passed", "failures", figures).

    Args:
        artifact: the ONNX artifact directory.
        model_dir: the merged PyTorch model dir (default: the manifest's source).
        reference: an already loaded EmbeddingModel (skips loading ``model_dir``).
        threads: ORT intra-op threads.

    Raises:
        ToolchainError: unreadable or tampered artifact (sha256), missing source model.
    """
    from toolchain.embedder import Embedder
    from toolchain.modeling.model import load_embedding_model

    artifact = Path(artifact)
    embedder = Embedder.from_artifact(artifact, provider="cpu", threads=threads)
    manifest = embedder.manifest
    stale = None
    if reference is None:
        source = Path(model_dir) if model_dir else source_model_dir(artifact, manifest)
        reference = load_embedding_model(source)
        recorded = manifest.get("source", {}).get("model_manifest_sha256")
        if not model_dir and recorded and sha256_file(source / "manifest.json") != recorded:
            stale = f"source model {source} changed since this artifact was exported"
    checks = _Checks(embedder, reference.eval(), Gates(**manifest["profile"]["gates"]))
    if stale:
        checks.failures.append(stale)
    for field, value in reference.variant.fields().items():
        if value != manifest[field]:
            checks.failures.append(f"manifest {field} {manifest[field]!r} but the source model "
                                   f"is {value!r}")
    random_fig = checks.random_shapes()
    text_fig, batch_fig, pad_figs = checks.texts()
    finite, norm_dev = checks.finite_and_unit_norm()
    expected = consumer_expectations(embedder, checks.reference)
    checks.embedder = embedder = None  # free the session before the consumer and the probe load
    consumer = consumer_gate(artifact, expected, checks.gates, threads)  # the weights again
    checks.failures += consumer.pop("failures")
    probe = probe_attention(artifact / manifest["model_file"], manifest, checks.gates.probe_tol)
    if probe["observed"] != manifest["attention"]:
        checks.failures.append(f"attention: graph behaves {probe['observed']} (first-token shift "
                               f"{probe['first_token_shift']}) but manifest says "
                               f"{manifest['attention']}")
    return {"passed": not checks.failures, "failures": checks.failures,
            "profile": manifest["profile"]["name"], "parity_random_shapes": random_fig,
            "parity_texts": text_fig, "batch_invariance": batch_fig,
            "padding_invariance": pad_figs, "finite": finite, "unit_norm_max_deviation": norm_dev,
            "attention_probe": probe, "consumer": consumer, "gates": manifest["profile"]["gates"],
            "rows_per_call": checks.rows_per_call}

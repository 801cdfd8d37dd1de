"""`poolattn export`: merged model dir -> one verified artifact directory per profile.

Artifact layout (written atomically: temp dir, verify, then rename):
    model.onnx (+ model.onnx.data over 2 GiB)   inputs input_ids/attention_mask, output
                                                sentence_embedding
    tokenizer.json, config.json, modules.json,  a model directory consumers load (the contract
    ... poolattn_onnx.py                        in tokenizer.json): toolchain/deploy/model_dir.py
    manifest.json                               contract, profile, parity figures, versions,
                                                runtime needs, relative source, sha256 of every file
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from toolchain.atomic import MANIFEST, atomic_dir, read_manifest, sha256_file, write_manifest
from toolchain.errors import ToolchainError
from toolchain.export.onnx_export import (DATA_FILE, INPUT_NAMES, MODEL_FILE, OPSET, OUTPUT_NAME,
                                          export_onnx)
from toolchain.export.calibration import write_calibration
from toolchain.export.transforms import apply_profile, needs_calibration
from toolchain.deploy.model_dir import write_model_dir_files
from toolchain.deploy.prompts import artifact_prompts
from toolchain.deploy.runtime import runtime_facts
from toolchain.export.profiles import Profile, load_profile

FORMAT_VERSION = 1
# Queries get an instruction, documents do not (toolchain.data.training.format_query).
INSTRUCTION_TEMPLATES = {"query": "Instruct: {instruction}\nQuery: {query}", "document": "{text}"}


def library_versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxscript": onnxscript.__version__}


def default_targets(model_dir: Path, profiles: Sequence[Profile], out: Path | None) -> list[Path]:
    """<run>/onnx-<profile> beside the model dir; --out is the artifact itself for one profile
    and the parent of onnx-<profile> dirs for several."""
    if out is None:
        return [model_dir.parent / f"onnx-{p.name}" for p in profiles]
    if len(profiles) == 1:
        return [out]
    return [out / f"onnx-{p.name}" for p in profiles]


def source_fields(model_dir: Path, target: Path, source_manifest: dict) -> dict:
    """Where the artifact came from, as paths relative to the artifact (no machine's absolute
    paths: a copied run resolves the same)."""
    merge = source_manifest.get("merge", {})
    run = merge.get("source_run")
    return {"model_dir_relative": os.path.relpath(model_dir.resolve(), target.resolve()),
            "model_manifest_sha256": sha256_file(model_dir / MANIFEST),
            "run_relative": os.path.relpath(run, target.resolve()) if run else None,
            "preset": merge.get("preset"), "merge_gate": merge.get("gate")}


def artifact_fields(model, model_dir: Path, target: Path, profile: Profile, export_info: dict,
                    transform: dict, runtime: dict) -> dict:
    """Every manifest field except ``files`` and ``verify``."""
    from toolchain.modeling.model import manifest_header

    source_manifest = read_manifest(model_dir, verify=False)
    return {
        "format_version": FORMAT_VERSION, "kind": "onnx_artifact",
        **manifest_header(model).to_fields(),
        "vocab_size": int(model.backbone.config.vocab_size),
        "instruction_templates": INSTRUCTION_TEMPLATES,
        "model_file": MODEL_FILE, "external_data": export_info["external_data"],
        "data_file": DATA_FILE if export_info["external_data"] else None,
        "input_names": INPUT_NAMES, "input_dtype": "int64", "output_names": [OUTPUT_NAME],
        "dynamic_axes": {name: {"0": "batch", "1": "sequence"} for name in INPUT_NAMES},
        "opset": runtime["opset_imports"].get("", OPSET), "runtime": runtime,
        "profile": profile.to_dict(), "session": profile.session,
        "precomputed": export_info["precomputed"], "fusions": export_info["fusions"],
        "transform": {"name": transform["transform"], **transform["details"]},
        "graph_weight_bytes": export_info["graph_weight_bytes"],
        "timings_s": {"export": export_info["export_seconds"], "save": export_info["save_seconds"],
                      "transform": transform["seconds"]},
        "versions": library_versions(),
        "built_on_cpu": build_cpu_fields(),
        "source": source_fields(model_dir, target, source_manifest),
    }


def build_cpu_fields() -> dict:
    """The export machine's CPU flags, and whether it has the int8 dot-product units (VNNI/AMX)
    that an int8 profile needs to run faster than fp32 (toolchain/cpu.py)."""
    from toolchain.cpu import cpu_has_int8_dot, recorded_flags

    return {"flags": recorded_flags(), "int8_dot": cpu_has_int8_dot()}


def int8_cpu_warning(profile: Profile) -> str | None:
    """A warning for an int8 profile exported on a CPU without VNNI/AMX: there ONNX Runtime's
    u8 x s8 kernels run no faster than fp32 (0.51-0.90x measured, docs/export.md), so the int8
    graph must not be rolled out as the faster one on such CPUs."""
    from toolchain.cpu import cpu_has_int8_dot

    if "int8" not in profile.quantization or cpu_has_int8_dot():
        return None
    return (f"WARNING [{profile.name}]: this CPU has no VNNI/AMX int8 units (avx512_vnni, "
            f"avx_vnni, amx_int8): an int8 graph runs no faster than fp32 here (measured "
            f"0.51-0.90x); serve the fp32 artifact on CPUs like this one, int8 only where "
            f"VNNI/AMX exist (docs/export.md)")


def export_model_dir(model_dir: str | Path, profiles: Sequence[str] = ("fp32",),
                     out: str | Path | None = None, threads: int | None = None,
                     fuse: bool = True, log=print) -> list[tuple[Path, dict]]:
    """Export, transform, verify and atomically write one artifact per profile.

    Args:
        model_dir: a merged model directory (`poolattn merge` output).
        profiles: profile names or YAML paths (export/<name>.yaml).
        out: see :func:`default_targets`.
        threads: ORT threads for verification.
        fuse: ONNX Runtime fusions on the exported graph (see ``ort_fusion.fuse_for_ort``).
        log: progress printer.

    Returns:
        [(artifact path, verify report)] in profile order.

    Raises:
        ToolchainError: bad input, exporter failure, or a failed verification (nothing written
        for that profile).
    """
    from toolchain.export.verify import verify_artifact
    from toolchain.modeling.model import load_embedding_model

    model_dir = Path(model_dir)
    loaded = [load_profile(p) for p in profiles] or [load_profile("fp32")]
    targets = default_targets(model_dir, loaded, Path(out) if out else None)
    if len(set(targets)) != len(targets):
        raise ToolchainError(f"profiles {[p.name for p in loaded]}: two write the same artifact "
                             f"directory; give each profile a distinct name")
    model = load_embedding_model(model_dir)
    prompts = artifact_prompts(read_manifest(model_dir, verify=False).get("merge", {})
                               .get("preset"))
    scratch_parent = targets[0].parent
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=scratch_parent) as scratch_root:
        scratches = export_scratches(model, Path(scratch_root), loaded, fuse, log)
        done = {}
        for index in _transform_order(loaded):
            profile, target = loaded[index], targets[index]
            scratch, info = scratches[fuse and profile.fuse]
            with atomic_dir(target) as tmp:
                transform = apply_profile(scratch, tmp, profile, info["external_data"])
                write_model_dir_files(tmp, model, prompts)
                runtime = runtime_facts(tmp / MODEL_FILE, profile_targets(profile))
                fields = artifact_fields(model, model_dir, target, profile, info, transform,
                                         runtime)
                write_manifest(tmp, fields)
                report = verify_artifact(tmp, reference=model, threads=threads)
                log(summary_line(target, report))
                if warning := int8_cpu_warning(profile):
                    log(warning)
                if not report["passed"]:
                    raise ToolchainError(f"{target}: verification failed (nothing written): "
                                         + "; ".join(report["failures"]))
                write_manifest(tmp, {**fields, "verify": report})
            done[index] = (target, report)
    return [done[i] for i in range(len(loaded))]


def profile_targets(profile: Profile) -> list[str]:
    """The onnxruntime versions a profile says it targets (``runtime_targets`` in its YAML)."""
    return [str(v) for v in profile.runtime_targets or []]


def export_scratches(model, root: Path, profiles: Sequence[Profile], fuse: bool,
                     log) -> dict[bool, tuple[Path, dict]]:
    """One exported graph per fusion setting the profiles need (``fuse`` and each profile's
    own ``fuse``: the portable profile takes the graph as exported), each with calibration
    feeds when one of its profiles needs them -> {fused: (scratch dir, export facts)}."""
    scratches = {}
    for fused in sorted({fuse and p.fuse for p in profiles}, reverse=True):
        users = [p for p in profiles if (fuse and p.fuse) == fused]
        scratch = root / ("fused" if fused else "unfused")
        scratch.mkdir()
        info = export_onnx(model, scratch, fuse=fused)
        if any(needs_calibration(p) for p in users):
            write_calibration(scratch, model.tokenizer, model.backbone.config.vocab_size)
        log(f"exported {model.variant.name} in {info['export_seconds']} s "
            f"({info['graph_weight_bytes'] / 2**20:.1f} MiB of weights, external data "
            f"{info['external_data']}, fused {fused}); precomputed constant saves "
            f"{info['precomputed']['flops_per_text']:,} FLOPs per text")
        scratches[fused] = (scratch, info)
    return scratches


def _transform_order(profiles: Sequence[Profile]) -> list[int]:
    """Indices in the order to build them: the plain fp32 copy hard-links the scratch export's
    files, and onnx then refuses to read a data file with several links (a "hard link
    attack"), so every profile that reads the scratch (int8, fp16) goes first."""
    return sorted(range(len(profiles)),
                  key=lambda i: (profiles[i].precision, profiles[i].quantization) == ("fp32", "none"))


def summary_line(target: Path, report: dict) -> str:
    """One line of parity figures for the CLI."""
    texts, rand = report["parity_texts"], report["parity_random_shapes"]
    probe = report["attention_probe"]
    consumer = [report.get("consumer", {}).get(side, {}).get("vs_embedder_min_cosine")
                for side in ("left", "right")]
    consumer_text = (f"; plain-ORT consumer cos {min(consumer):.6f}" if None not in consumer
                     else "")
    return (f"{target}: {'PASS' if report['passed'] else 'FAIL'} [{report['profile']}] "
            f"texts max|d| {texts['max_abs']:.2e} cos {texts['min_cosine']:.6f}; "
            f"random max|d| {rand['max_abs']:.2e} cos {rand['min_cosine']:.6f}; "
            f"batch-inv cos {report['batch_invariance']['min_cosine']:.6f}; "
            f"attention {probe['observed']} (shift {max(probe['first_token_shift']):.3g})"
            + consumer_text)

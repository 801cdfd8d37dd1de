"""Which graph optimisations pay? Measured on tiny exports; the fp32/int8 profiles follow it.

Candidates, each on the same exported model (batch 8 x 128 tokens, CPU provider):
  exporter optimiser on/off   torch.onnx.export(optimize=...) (onnxscript constant folding etc.)
  ORT session level           disable | basic | extended | all (what the profiles' session sets)
  ORT offline copy            the session's optimised graph saved once, then loaded unoptimised
  ORT transformer fusions     onnxruntime.transformers.optimizer (BERT/GPT-2 fusion patterns)
Rounds are interleaved. With one intra-op thread ORT computes on the calling thread, so that
thread's CPU time per run (cpu_ms) measures the graph's work even on a shared, busy machine;
wall-clock min/median are reported beside it.

    .venv/bin/python benchmarks/export_probes/graph_optimisation.py \
        [--variants m3 m5] [--out benchmarks/results/export_graph_optimisation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ("disable", "basic", "extended", "all")


def export(model, path: Path, optimize: bool) -> dict:
    import torch

    from toolchain.export.onnx_export import INPUT_NAMES, OUTPUT_NAME, ExportWrapper

    class EmbeddingOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = ExportWrapper(model)

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids, attention_mask)[0]

    ids = torch.randint(3, 1000, (2, 8))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    dims = {n: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")} for n in INPUT_NAMES}
    start = time.perf_counter()
    program = torch.onnx.export(EmbeddingOnly().eval(), (ids, mask), dynamo=True, opset_version=18,
                                 input_names=INPUT_NAMES, output_names=[OUTPUT_NAME],
                                 dynamic_shapes=dims, optimize=optimize, verbose=False)
    seconds = time.perf_counter() - start
    program.save(str(path))
    return {"export_s": round(seconds, 2), "nodes": len(program.model_proto.graph.node)}


def session(path: Path, level: str, threads: int, save_to: Path | None = None):
    import onnxruntime as ort

    from toolchain.ort_session import session_options

    options = session_options({"graph_optimization_level": level}, threads)
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    start = time.perf_counter()
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sess, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny-mistral")
    parser.add_argument("--variants", nargs="+", default=["m3", "m5"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/export_graph_optimisation.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from toolchain.modeling import build_embedding_model

    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(3, 30000, (8, 128)),
             "attention_mask": np.ones((8, 128), np.int64)}
    results = {"command": "python benchmarks/export_probes/graph_optimisation.py",
               "threads": args.threads, "batch": "8x128", "cpus": os.cpu_count(), "variants": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for variant in args.variants:
            model = build_embedding_model(args.preset, variant).eval()
            candidates, facts = {}, {}
            for optimize in (True, False):
                path = scratch / f"{variant}-opt{int(optimize)}.onnx"
                facts[f"exporter_optimize_{optimize}"] = export(model, path, optimize)
                for level in LEVELS:
                    candidates[f"exporter_opt={optimize}/ort={level}"] = (path, level)
            base = scratch / f"{variant}-opt1.onnx"
            for level in ("basic", "extended"):
                offline = scratch / f"{variant}-offline-{level}.onnx"
                session(base, level, args.threads, save_to=offline)
                candidates[f"offline_{level}/ort=disable"] = (offline, "disable")
            try:
                from onnxruntime.transformers.optimizer import optimize_model

                fused = optimize_model(str(base), model_type="bert", opt_level=0,
                                       num_heads=0, hidden_size=0)
                facts["transformers_fusions"] = fused.get_fused_operator_statistics()
                fused.save_model_to_file(str(scratch / f"{variant}-fused.onnx"))
                fused_path = scratch / f"{variant}-fused.onnx"
                candidates["ort_transformers_fusions/ort=all"] = (fused_path, "all")
            except Exception as err:  # report, do not fail: it is one candidate among several
                facts["transformers_fusions"] = f"failed: {type(err).__name__}: {err}"[:300]
            sessions, rows = {}, {}
            for name, (path, level) in candidates.items():
                sess, load = session(path, level, args.threads)
                for _ in range(3):
                    sess.run(None, feeds)
                sessions[name] = sess
                rows[name] = {"session_load_ms": round(1000 * load, 1), "ms": [], "cpu": []}
            for _ in range(args.rounds):  # interleaved: contention hits every candidate alike
                for name, sess in sessions.items():
                    start, cpu = time.perf_counter(), time.thread_time()
                    sess.run(None, feeds)
                    rows[name]["cpu"].append(1000 * (time.thread_time() - cpu))
                    rows[name]["ms"].append(1000 * (time.perf_counter() - start))
            for row in rows.values():
                times, cpu = row.pop("ms"), row.pop("cpu")
                row.update(cpu_ms_median=round(float(np.median(cpu)), 2),
                           cpu_ms_min=round(min(cpu), 2), min_ms=round(min(times), 2),
                           median_ms=round(float(np.median(times)), 2))
            results["variants"][variant] = {"facts": facts, "latency": rows}
            print(json.dumps(results["variants"][variant], indent=2), flush=True)
    results["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

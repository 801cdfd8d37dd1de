"""Export a model over 2 GiB through the real pipeline; record time and peak memory.

Not a CI test (needs ~8 GB of RAM and ~10 GB of disk). The shape is a "wide, shallow" model:
a Mistral backbone with hidden 2048 and one layer, plus the paper-size Perceiver head
(32 heads x 2048 dim_head, GEGLU x4) with 16 latents (params do not depend on the latent count;
16 keeps verification fast). About 2.25 GB of weights end up in the graph (to_q is replaced by
the precomputed latent queries), so model.onnx + one model.onnx.data are written.

    .venv/bin/python benchmarks/export_large/run.py [--work /tmp/export-large] \
        [--out benchmarks/results/export_large.json]

Phases (each timed; peak RSS sampled every 0.1 s from /proc/self/status):
build + save the merged model dir, load it, export + save ONNX, verify (ORT vs torch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HIDDEN = 2048
BACKBONE = {"hidden_size": HIDDEN, "intermediate_size": 5632, "num_hidden_layers": 1,
            "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 512,
            "sliding_window": 4096}
HEAD = {"n_latents": 16, "num_heads": 32, "dim_head": 2048, "ff_mult": 4}


class RssSampler:
    """Peak resident set size per named phase (GiB), sampled in a background thread."""

    def __init__(self) -> None:
        self.phase, self.peaks, self._stop = "start", {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), self.rss())

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {k: round(v, 2) for k, v in self.peaks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/export-large"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/export_large.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()

    import torch

    from toolchain.export.pipeline import export_model_dir
    from toolchain.modeling import build_embedding_model, save_embedding_model
    from toolchain.presets import BackboneSpec, Preset

    torch.set_num_threads(args.threads)
    shutil.rmtree(args.work, ignore_errors=True)
    sampler, timings = RssSampler(), {}
    start = time.perf_counter()
    sampler.phase = "build_and_save"
    preset = Preset("export-large", BackboneSpec(source="config", architecture="mistral",
                                                 config=BACKBONE, tokenizer="mistral-v1-tokenizer"),
                    max_length=128, head_size="paper")
    model = build_embedding_model(preset, "m2", head_overrides=HEAD)
    params = sum(p.numel() for p in model.parameters())
    save_embedding_model(model, args.work / "merged")
    del model
    timings["build_and_save"] = round(time.perf_counter() - start, 1)

    marks = {}

    def log(line: str) -> None:  # phase boundaries from the pipeline's progress lines
        now = time.perf_counter()
        marks[line.split()[0]] = now
        sampler.phase = "verify" if line.startswith("exported") else "after_verify"
        print(line, flush=True)

    sampler.phase = "load_and_export"
    begin = time.perf_counter()
    [(artifact, report)] = export_model_dir(args.work / "merged", ["fp32"], threads=args.threads,
                                            log=log)
    total = time.perf_counter() - begin
    manifest = json.loads((artifact / "manifest.json").read_text())
    files = {p.name: p.stat().st_size for p in artifact.iterdir() if p.is_file()}
    result = {
        "what": "export over 2 GiB: wide shallow Mistral (hidden 2048, 1 layer) + paper head, m2",
        "command": "python benchmarks/export_large/run.py",
        "machine": {"cpus": os.cpu_count(), "threads": args.threads,
                    "python": platform.python_version(), "loadavg_at_end": os.getloadavg()},
        "model": {"backbone": BACKBONE, "head": HEAD, "parameters_torch": params,
                  "graph_weight_bytes": manifest.get("graph_weight_bytes")},
        "files_bytes": files, "external_data": manifest["external_data"],
        "seconds": {**timings, "export_pipeline_total": round(total, 1),
                    "torch_onnx_export": manifest["timings_s"]["export"],
                    "onnx_save": manifest["timings_s"]["save"]},
        "peak_rss_gib": sampler.stop(),
        "peak_rss_gib_process": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "precomputed": manifest["precomputed"], "verify_passed": report["passed"],
        "parity_texts": report["parity_texts"], "parity_random_shapes": {
            k: v for k, v in report["parity_random_shapes"].items() if k != "shapes"},
        "attention_probe": report["attention_probe"], "versions": manifest["versions"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()

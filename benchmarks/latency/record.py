"""Record the stage's reference CPU benchmarks into benchmarks/results/bench_<name>.md.

    .venv/bin/python benchmarks/latency/record.py --threads 2            # ~10-20 min on 2 cores

Model: SmolLM2-135M's shape with random weights (benchmarks/latency/smollm2-shaped.yaml), m1,
merged -> ONNX fp32 + int8 through the real export stage. Measures, all at the same threads:
  1. ORT fp32 vs PyTorch eager at 8x128 (target >= 1.5x)      2. int8 vs fp32 at 8x128 (>= 3x)
  3. achieved GFLOP/s of the fp32 graph at 8x512 vs measured matmul peak (>= 50%)
  4. added latency of compact and paper heads (m2..m5) over eos_last at 8x128, timed alone on
     cached backbone features; the compact heads also at Mistral-7B width on random features,
     and extrapolated to a Mistral-7B backbone from FLOPs (target compact <= 5%).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from toolchain.bench.latency import (machine_info, make_inputs, percentiles,
                                     time_callable, time_interleaved)
from toolchain.bench.pipeline import source_macs
from toolchain.bench.split import eos_last_head, time_head
from toolchain.embedder import Embedder
from toolchain.export.pipeline import export_model_dir
from toolchain.modeling import VARIANTS, build_embedding_model, load_embedding_model
from toolchain.modeling import save_embedding_model
from toolchain.modeling.pooling import HeadConfig, build_pooler, head_macs
from toolchain.modeling.shapes import MODEL_SHAPES, ModelShape, backbone_macs
from toolchain.presets import load_preset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def prepare(work: Path, threads: int) -> tuple[Path, Path, Path]:
    """m1 merged dir + onnx-fp32 + onnx-int8 of the SmolLM2-shaped preset (built once)."""
    merged = work / "m1" / "merged"
    if not (merged / "manifest.json").is_file():
        save_embedding_model(build_embedding_model(load_preset(HERE / "smollm2-shaped.yaml"),
                                                   "m1"), merged)
    fp32, int8 = work / "m1" / "onnx-fp32", work / "m1" / "onnx-int8-bench"
    for target, profile in ((fp32, "fp32"), (int8, str(HERE / "int8-bench.yaml"))):
        if not (target / "manifest.json").is_file():
            export_model_dir(merged, [profile], out=target, threads=threads)
    return merged, fp32, int8


def features_at(model, batch: int, seq_len: int) -> dict:
    """Backbone features (all layers) of random real-vocabulary ids, EOS last."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.backbone.config.vocab_size, (batch, seq_len), generator=gen)
    ids[:, -1] = model.tokenizer.eos_token_id
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return {"token_embeddings": out.last_hidden_state, "attention_mask": mask,
            "all_layer_embeddings": out.hidden_states}


def random_features(batch: int, seq_len: int, hidden: int, layers: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    states = tuple(torch.randn(batch, seq_len, hidden, generator=gen) for _ in range(layers + 1))
    return {"token_embeddings": states[-1], "all_layer_embeddings": states,
            "attention_mask": torch.ones(batch, seq_len, dtype=torch.int64)}


def head_rows(features: dict, hidden: int, layers: int, sizes, args) -> list[dict]:
    """Each trainable variant's head at each size, timed alone vs eos_last on ``features``."""
    batch, seq_len = features["attention_mask"].shape
    eos = time_head(eos_last_head(hidden, layers), features, args.warmup, args.repeats)
    rows = []
    for variant in (v for v in VARIANTS.values() if v.pooling != "eos_last"):
        for size in sizes:
            config = HeadConfig.from_size(size, pooling=variant.pooling,
                                          attention=variant.attention, hidden_size=hidden,
                                          num_layers=layers)
            torch.manual_seed(0)
            head = build_pooler(config).eval()
            stats = time_head(head, features, min(args.warmup, 2), args.repeats, args.max_seconds)
            macs = head_macs(config, seq_len)["total"] * batch
            rows.append({"variant": variant.name, "size": size, "head_ms": stats["p50_ms"],
                         "eos_ms": eos["p50_ms"], "added_ms": stats["p50_ms"] - eos["p50_ms"],
                         "head_gflops": 2 * macs / 1e9 / (stats["p50_ms"] / 1e3),
                         "repeats": args.repeats})
            del head
    return rows


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--work", default=str(ROOT / "runs" / "smollm2-shaped"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "bench_cpu_smollm2-shaped.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load_before = time.time(), os.getloadavg()
    merged, fp32_dir, int8_dir = prepare(Path(args.work), args.threads)

    # 1-3: the same m1 model on three runtimes
    runners = {"ORT fp32": Embedder.from_artifact(fp32_dir, provider="cpu", threads=args.threads),
               "ORT int8": Embedder.from_artifact(int8_dir, provider="cpu", threads=args.threads),
               "PyTorch eager": Embedder.from_model_dir(merged, threads=args.threads)}
    log("timing ORT fp32 / ORT int8 / PyTorch eager at 8x128, interleaved")
    ids, mask = make_inputs(runners["ORT fp32"], 8, 128)
    samples = time_interleaved({n: (lambda r=r: r.run(ids, mask)) for n, r in runners.items()},
                               args.warmup, args.repeats)
    lat = {n: {**percentiles(v), "texts_per_s": 8e3 / percentiles(v)["p50_ms"]}
           for n, v in samples.items()}
    log("ORT fp32 at 8x512, interleaved with a 2048^2 torch.mm (the machine's matmul peak)")
    big_ids, big_mask = make_inputs(runners["ORT fp32"], 8, 512)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 2048, generator=gen), torch.randn(2048, 2048, generator=gen)
    graph = runners["ORT fp32"]
    pair = time_interleaved({"graph": lambda: graph.run(big_ids, big_mask),
                             "mm": lambda: torch.mm(a, b)}, 2, max(5, args.repeats // 2))
    big = percentiles(pair["graph"])
    peak = {"size": 2048, "threads": args.threads,
            "gflops": 2 * 2048 ** 3 / 1e9 / (min(pair["mm"]) / 1e3)}
    del runners, graph
    achieved = 2 * 8 * source_macs(merged, 512) / 1e9 / (big["p50_ms"] / 1e3)
    ort_vs_torch = lat["PyTorch eager"]["p50_ms"] / lat["ORT fp32"]["p50_ms"]
    int8_vs_fp32 = lat["ORT fp32"]["p50_ms"] / lat["ORT int8"]["p50_ms"]

    # 4: heads alone on cached SmolLM2-shaped features, then at Mistral-7B width
    log("cost split: heads alone on cached SmolLM2-shaped features")
    model = load_embedding_model(merged)
    shape = ModelShape.from_config(model.backbone.config)
    ids = torch.randint(3, shape.vocab_size, (8, 128))
    mask = torch.ones_like(ids)
    bb = percentiles(time_callable(lambda: model.features(ids, mask), args.warmup, args.repeats))
    features = features_at(model, 8, 128)
    del model
    small = head_rows(features, shape.hidden_size, shape.num_layers, ("compact", "paper"), args)
    del features
    m7 = MODEL_SHAPES["mistral-7b"]
    log("compact heads at Mistral-7B width")
    big_heads = head_rows(random_features(8, 128, m7.hidden_size, m7.num_layers), m7.hidden_size,
                          m7.num_layers, ("compact",), args)
    ort_ms = lat["ORT fp32"]["p50_ms"]
    ort_backbone_gflops = 2 * 8 * backbone_macs(shape, 128) / 1e9 / (ort_ms / 1e3)
    m7_backbone_ms = 2 * 8 * backbone_macs(m7, 128) / 1e9 / ort_backbone_gflops * 1e3

    info = machine_info()
    cmd = "OMP_NUM_THREADS=%s .venv/bin/python benchmarks/latency/record.py %s" % (
        os.environ.get("OMP_NUM_THREADS", "-"), " ".join(sys.argv[1:]))
    out = [f"# CPU benchmarks: SmolLM2-135M shape (random weights), m1, batch 8", "",
           f"Recorded {time.strftime('%Y-%m-%d %H:%M')} in {time.time() - start:.0f} s.", "",
           f"- Command: `{cmd}`",
           f"- Machine: {info['cpu']}, {info['cores']} cores, {info['platform']}; "
           f"torch {info['torch']}, onnxruntime {info['onnxruntime']}; {args.threads} threads "
           f"for every runtime; load average before/after "
           f"{load_before[0]:.2f}/{os.getloadavg()[0]:.2f} (the machine was shared).",
           f"- Model: `benchmarks/latency/smollm2-shaped.yaml` (Llama, 30 layers, hidden 576, "
           f"9/3 heads; {backbone_macs(shape, 128) / 1e9:.2f} GMAC per 128-token text); "
           f"artifacts from `toolchain.export`: profile fp32, and int8 (dynamic int8 MatMuls) as "
           f"`benchmarks/latency/int8-bench.yaml` (the shipped int8 profile with a looser "
           f"invariance gate; see its header).",
           f"- Timing: {args.warmup} warm-up runs, then {args.repeats} timed runs per shape; "
           f"inputs pre-tokenised (Embedder.run), no padding. The three runtimes at 8x128 are "
           f"timed interleaved (one call each per round) so load drift hits them alike; so are "
           f"the 8x512 graph and the matmul that measures the peak.", "",
           "## Runtimes at 8x128", "", "| runtime | p50 ms | p95 ms | p99 ms | texts/s |",
           "|---|---|---|---|---|"]
    out += [f"| {n} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['texts_per_s']:.1f} |" for n, r in lat.items()]
    out += ["", "| target | measured | verdict |", "|---|---|---|",
            f"| ORT fp32 >= 1.5x PyTorch eager | {ort_vs_torch:.2f}x | "
            f"{verdict(ort_vs_torch >= 1.5)} |",
            f"| int8 >= 3x fp32 | {int8_vs_fp32:.2f}x | {verdict(int8_vs_fp32 >= 3)} |",
            f"| fp32 graph at 8x512 >= 50% of matmul peak | {achieved:.1f} GFLOP/s of "
            f"{peak['gflops']:.1f} (best torch.mm {peak['size']}^2, interleaved) = "
            f"{100 * achieved / peak['gflops']:.0f}% (graph p50 {big['p50_ms']:.0f} ms) | "
            f"{verdict(achieved >= 0.5 * peak['gflops'])} |", "",
            "## Added latency of the pooling heads over eos_last at 8x128", "",
            "Each head (+ L2 normalise) is timed alone in PyTorch eager on cached backbone "
            "features, against an eos_last head on the same features. Backbone at this shape: "
            f"PyTorch eager {bb['p50_ms']:.1f} ms, ORT fp32 m1 {ort_ms:.1f} ms.", "",
            "| variant | head size | head ms | added ms | % of eager backbone | % of ORT m1 | "
            "head GFLOP/s |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['variant']} | {r['size']} | {r['head_ms']:.2f} | {r['added_ms']:.2f} | "
            f"{100 * r['added_ms'] / bb['p50_ms']:.1f} | "
            f"{100 * r['added_ms'] / ort_ms:.1f} | {r['head_gflops']:.1f} |"
            for r in small]
    out += ["", "## Extrapolated to Mistral-7B at 128 tokens", "",
            f"Compact heads timed at Mistral-7B width (hidden 4096, 32 layers) on random features, "
            f"8x128. The 7B backbone cannot run here, so its time is extrapolated from FLOPs at "
            f"the rate ORT achieved on the SmolLM2-shaped backbone ({ort_backbone_gflops:.1f} "
            f"GFLOP/s): {m7_backbone_ms / 1e3:.1f} s per batch. Paper-size heads at 7B follow "
            f"from FLOPs alone.", "",
            "| variant | head size | measured head ms (7B width) | % of extrapolated 7B backbone "
            "| % by FLOPs alone | target <= 5% |", "|---|---|---|---|---|---|"]
    for r in big_heads:
        pct = 100 * r["added_ms"] / m7_backbone_ms
        flops = 100 * head_macs(HeadConfig.from_size(
            "compact", pooling=VARIANTS[r["variant"]].pooling,
            attention=VARIANTS[r["variant"]].attention, hidden_size=m7.hidden_size,
            num_layers=m7.num_layers), 128)["per_text"] / backbone_macs(m7, 128)
        out.append(f"| {r['variant']} | compact | {r['head_ms']:.1f} | {pct:.2f} | {flops:.2f} "
                   f"| {verdict(pct <= 5 and flops <= 5)} |")
    for variant in (v for v in VARIANTS.values() if v.pooling != "eos_last"):
        config = HeadConfig.from_size("paper", pooling=variant.pooling,
                                      attention=variant.attention, hidden_size=m7.hidden_size,
                                      num_layers=m7.num_layers)
        macs = head_macs(config, 128)
        pct = 100 * macs["per_text"] / backbone_macs(m7, 128)
        total = 100 * macs["total"] / backbone_macs(m7, 128)
        out.append(f"| {variant.name} | paper | - | - | {pct:.1f} ({total:.1f} with the latent "
                   f"queries, which export precomputes) | (no target) |")
    Path(args.out).write_text("\n".join(out) + "\n")
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

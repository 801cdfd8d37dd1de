"""Training step time: the backbone's forward+backward vs the toolchain's own work.

For each (model, variant) it times, interleaved so load changes hit both alike:
  backbone  forward of the LoRA backbone (all hidden states where the head needs them) and the
            backward of a fixed cotangent on exactly the outputs the head reads;
  full      the real training step: backbone + pooling head + L2 norm + InfoNCE (+ the
            cross-rank gather, an identity with one process) + backward;
  head_loss the head + loss forward+backward alone, on detached backbone outputs.
overhead = full - backbone (what the toolchain adds); target: <= 10 % of backbone.

Run (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step/bench_train_step.py \
        --out benchmarks/results/train_step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from toolchain.modeling import build_embedding_model
from toolchain.modeling.lora import LoraSettings, apply_lora
from toolchain.presets import BackboneSpec, Preset, load_preset
from toolchain.train.loss import info_nce

# Real SmolLM2-135M dimensions, random weights (building from config needs no download).
SMOLLM2_SHAPE = Preset(name="smollm2-135m-shape", backbone=BackboneSpec(
    source="config", architecture="llama", tokenizer="smollm2-tokenizer", config={
        "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 8192}))

CASES = {  # model -> (preset, queries per step, tokens per text, timed repetitions)
    "tiny-mistral": (lambda: load_preset("tiny-mistral"), 16, 64, 7),
    # ~3 s per fwd+bwd on one shared CPU thread; shorter texts make the head's share LARGER
    # (the backbone scales with tokens, the m5 head mostly with layers), so this is conservative.
    "smollm2-135m-shape": (lambda: SMOLLM2_SHAPE, 4, 32, 3),
}


def _batch(model, queries: int, length: int, seed: int = 0):
    """(3 * queries) texts of ``length`` random tokens: queries, positives, negatives."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.backbone.config.vocab_size
    ids = torch.randint(3, vocab, (3 * queries, length), generator=gen)
    return ids, torch.ones_like(ids)


def _timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_case(preset: Preset, variant: str, queries: int, length: int, reps: int) -> dict:
    model = build_embedding_model(preset, variant, verify=False)
    apply_lora(model, LoraSettings())
    model.train()
    ids, mask = _batch(model, queries, length)
    n = queries

    def backbone_step():
        features = model.features(ids, mask)
        used = (features["all_layer_embeddings"][1:] if model.head.needs_all_layers
                else (features["token_embeddings"],))
        torch.autograd.backward(list(used), [torch.ones_like(t) * 1e-3 for t in used])
        model.zero_grad(set_to_none=True)

    def full_step():
        emb = model(ids, mask)
        info_nce(emb[:n], emb[n:2 * n], emb[2 * n:]).loss.backward()
        model.zero_grad(set_to_none=True)

    with torch.no_grad():
        cached = model.features(ids, mask)

    def head_loss_step():
        feats = {k: (tuple(t.detach().requires_grad_() for t in v) if isinstance(v, tuple)
                     else v.detach().requires_grad_() if v.is_floating_point() else v)
                 for k, v in cached.items()}
        emb = F.normalize(model.head(feats)["sentence_embedding"].float(), dim=-1)
        info_nce(emb[:n], emb[n:2 * n], emb[2 * n:]).loss.backward()
        model.zero_grad(set_to_none=True)

    for fn in (backbone_step, full_step, head_loss_step):  # burn-in
        _timed(fn, 2)
    times = {"backbone": [], "full": [], "head_loss": []}
    for _ in range(reps):  # interleaved
        times["backbone"] += _timed(backbone_step, 1)
        times["full"] += _timed(full_step, 1)
        times["head_loss"] += _timed(head_loss_step, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["full"] - med["backbone"]
    return {"variant": variant, "texts": 3 * queries, "tokens_per_text": length,
            "backbone_s": med["backbone"], "full_s": med["full"], "head_loss_s": med["head_loss"],
            "overhead_s": overhead, "overhead_pct": 100 * overhead / med["backbone"],
            "head_loss_pct": 100 * med["head_loss"] / med["backbone"],
            "head_params": sum(p.numel() for p in model.head.parameters()),
            "met_10pct": med["head_loss"] <= 0.10 * med["backbone"]}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1m_at_start": os.getloadavg()[0], "device": "cpu", "dtype": "float32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="override each case's repetitions")
    parser.add_argument("--models", nargs="*", default=list(CASES))
    parser.add_argument("--variants", nargs="*", default=["m1", "m5"])
    parser.add_argument("--out", default="benchmarks/results/train_step")
    args = parser.parse_args()
    info, rows = machine(), []
    for name in args.models:
        make_preset, queries, length, reps = CASES[name]
        for variant in args.variants:
            row = {"model": name, "reps": args.reps or reps,
                   **bench_case(make_preset(), variant, queries, length, args.reps or reps)}
            rows.append(row)
            print(json.dumps(row))
    info["load_avg_1m_at_end"] = os.getloadavg()[0]
    command = ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step/bench_train_step.py "
               f"--out {args.out}")
    result = {"machine": info, "command": command, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(result))


def render(result: dict) -> str:
    m = result["machine"]
    lines = ["# Training step: backbone vs the toolchain's own work (head + loss + gather)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} "
             f"thread), {m['device']} {m['dtype']}; load average {m['load_avg_1m_at_start']:.1f} -> "
             f"{m['load_avg_1m_at_end']:.1f} (shared machine: absolute times are noisy, the "
             "interleaved ratios less so).", "", f"Reproduce: `{result['command']}`", "",
             "| model | variant | texts x tokens | backbone fwd+bwd (s) | full step (s) | "
             "full - backbone | head+loss alone | head params | <= 10 %? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['variant']} | {r['texts']} x {r['tokens_per_text']} | "
                     f"{r['backbone_s']:.4f} | {r['full_s']:.4f} | {r['overhead_pct']:+.1f} % | "
                     f"{r['head_loss_pct']:.1f} % | {r['head_params']:,} | "
                     f"{'met' if r['met_10pct'] else 'NOT met'} |")
    lines += ["", "Medians over interleaved repetitions. \"head+loss alone\" times the head, L2 norm "
              "and InfoNCE forward+backward on detached backbone outputs (one process: the "
              "cross-rank gather is an identity); \"full - backbone\" also includes autograd "
              "bookkeeping and is noisier. The target is judged on head+loss alone.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

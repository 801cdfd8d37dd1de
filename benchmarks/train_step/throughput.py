"""Real tokens per second of the study's training step, side by side, against the matmul peak.

Each case runs the real recipe (TrainRecipe: DeepSpeed ZeRO-2 engine, peft LoRA, the variant's
head, InfoNCE) for a few steps of the study preset's own data, in a process of its own (so peak
RSS is the case's own), one case after another on the same machine:

    fp32-before   the step as it was: fp32, every text padded to the step's longest, peft's
                  nn.Dropout masks, PyTorch's default attention kernel
    bf16-before   the same in bf16 (what `precision: auto` ran on a bf16 CPU)   [bf16 CPUs only]
    fp32-now      the step now in fp32: texts sorted by length into forward chunks of
                  `group_rows`, packed-bits LoRA dropout
    bf16-padded   the step now in bf16 but padded (what grouping alone buys)  [bf16 CPUs only]
    bf16-now      the step now in bf16 (math attention kernel on CPU)         [bf16 CPUs only]

Every case sees the same batches (same seed), so the real tokens are equal and only time differs.
The first step (allocator warm-up, DeepSpeed's first-step work) is left out of the figures.
Useful FLOPs per real token: 4 x the backbone's non-embedding parameters (2 forward, 2 backward
through the frozen weights to the inputs) + attention (QK^T and AV: 4 x layers x hidden x mean
real length forward, twice that backward); LoRA and the head are left out (under 3 %).
The matmul peak is the best of square GEMMs (2048^3) in the same precision, measured in the run.

Run (from the repository root; ~10 minutes on 2 cores):
    .venv/bin/python benchmarks/train_step/throughput.py --out benchmarks/results/train_step_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {  # name -> (precision, group_rows (0 = one padded pass, None = the preset's), as before)
    "fp32-before": ("fp32", 0, True),
    "bf16-before": ("bf16", 0, True),
    "fp32-now": ("fp32", None, False),
    "bf16-padded": ("bf16", 0, False),
    "bf16-now": ("bf16", None, False),
}
BASELINE = "fp32-before"


def restore_previous_step(recipe) -> None:
    """Undo this round's step changes on a set-up recipe: nn.Dropout in the LoRA layers and
    PyTorch's default attention kernel (grouping is off through group_rows 0)."""
    import contextlib

    from torch import nn

    import toolchain.train.recipe as recipe_module
    from toolchain.modeling.dropout import PackedBitsDropout, swap_lora_dropout

    swap_lora_dropout(recipe.model, PackedBitsDropout, nn.Dropout)
    recipe_module.attention_kernel = lambda device, precision: contextlib.nullcontext()


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak(dtype_name: str, size: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of a size^3 GEMM in ``dtype_name`` with this process's threads."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up (oneDNN kernel selection)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def saved_activations_mb(recipe, step: int) -> float:
    """MiB of the tensors autograd keeps for the backward of one step (``step``'s batch), weights
    excluded: what a step holds beyond the model, measured with saved-tensor hooks."""
    import torch

    weights = {p.untyped_storage().data_ptr() for p in recipe.model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        recipe.accumulate(step)
    return sum(saved.values()) / 1024 ** 2


def run_case(name: str, preset: str, variant: str, steps: int) -> dict:
    """One case in this process: build, train ``steps`` steps, return its figures."""
    import torch

    from toolchain.presets import load_preset
    from toolchain.train import TrainRecipe, config_for_preset
    from toolchain.train.runtime import peak_rss_mb

    precision, group_rows, before = CASES[name]
    started = rss_mb()
    loaded = load_preset(preset)
    config = config_for_preset(loaded, steps=steps, save_every=0, precision=precision,
                               group_rows=group_rows, warmup_steps=1)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = TrainRecipe(loaded, config, variant=variant, run_dir=Path(tmp) / "run",
                             resume=False)
        recipe.setup()
        if before:
            restore_previous_step(recipe)
        after_setup = rss_mb()
        recipe.train()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
        activations = saved_activations_mb(recipe, steps)
        recipe.cleanup()
    backbone = recipe.model.backbone
    cfg = backbone.config
    embedding = sum(p.numel() for n, p in backbone.named_parameters() if "embed_tokens" in n)
    non_embedding = sum(p.numel() for p in backbone.parameters()) - embedding
    timed = rows[1:]
    tokens = sum(r["tokens_per_s"] * r["step_s"] for r in timed)
    seconds = sum(r["step_s"] for r in timed)
    texts_per_step = config.batch_size * (2 + config.negatives_per_query) * config.grad_accum
    real_per_text = tokens / (texts_per_step * len(timed))
    flops_per_token = 4 * non_embedding + 12 * cfg.num_hidden_layers * cfg.hidden_size * real_per_text
    return {"case": name, "precision": rows[-1]["precision"], "group_rows": config.group_rows,
            "steps_timed": len(timed), "real_tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "padding_fraction": statistics.fmean(r["padding_fraction"] for r in timed),
            "gflops_per_s": tokens / seconds * flops_per_token / 1e9,
            "flops_per_token": flops_per_token, "non_embedding_params": non_embedding,
            "params": sum(p.numel() for p in recipe.model.parameters()),
            "trainable": sum(p.numel() for p in recipe.model.parameters() if p.requires_grad),
            "rss_start_mb": started, "rss_after_setup_mb": after_setup,
            "peak_rss_mb": peak_rss_mb(), "saved_activations_mb": activations,
            "threads": torch.get_num_threads(),
            "loss": [r["loss"] for r in rows]}


def memory_parts(case: dict) -> dict:
    """Sizes the config controls, MiB: weights (fp32 and a bf16 copy), trainable state; from a
    case's parameter counts."""
    total, trainable = case["params"], case["trainable"]
    mib = 1024 ** 2
    return {"params": total, "trainable": trainable,
            "weights_fp32_mb": total * 4 / mib, "weights_bf16_mb": total * 2 / mib,
            # AdamW: fp32 master copy + grad + 2 moments of the trainable parameters
            "trainable_state_mb": trainable * 16 / mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="smollm2-135m-study")
    parser.add_argument("--variant", default="m5")
    parser.add_argument("--steps", type=int, default=7, help="steps per case (the first is not timed)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_step_throughput"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_case(args.one, args.preset, args.variant, args.steps)))
        return

    from toolchain.bench.latency import machine_info
    from toolchain.cpu import cpu_has_bf16

    results, skipped = [], []
    for name in args.cases.split(","):
        if CASES[name][0] == "bf16" and not cpu_has_bf16():
            skipped.append(f"{name}: this CPU has no AVX512-BF16/AMX-BF16")
            continue
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--preset", args.preset,
                               "--variant", args.variant, "--steps", str(args.steps)],
                              capture_output=True, text=True, env={**os.environ})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"case {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[0][len("RESULT "):]))
        print(f"{name}: {results[-1]['tokens_per_s']:.0f} real tokens/s, "
              f"padding {results[-1]['padding_fraction']:.1%}", file=sys.stderr)
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16") if p == "fp32" or cpu_has_bf16()}
    base = next((r for r in results if r["case"] == BASELINE), None)
    for r in results:
        r["peak_gflops_per_s"] = peaks[r["precision"]]
        r["fraction_of_peak"] = r["gflops_per_s"] / peaks[r["precision"]]
        r["speedup_vs_baseline"] = r["tokens_per_s"] / base["tokens_per_s"] if base else None
    record = {"preset": args.preset, "variant": args.variant, "steps": args.steps,
              "machine": machine_info(), "matmul_peak_gflops_per_s": peaks,
              "memory_parts": memory_parts(results[0]), "cases": results,
              "skipped": skipped, "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(record))
    print(render(record))


def render(record: dict) -> str:
    m, parts = record["machine"], record["memory_parts"]
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none recorded"
    lines = [f"# Training step throughput: {record['preset']} {record['variant']} ({record['date']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} "
             f"threads); CPU flags: {flags}.", "",
             "Reproduce: `.venv/bin/python benchmarks/train_step/throughput.py --out "
             "benchmarks/results/train_step_throughput`", "",
             f"Matmul peak measured in this run (best 2048^3 GEMM): " + ", ".join(
                 f"{p} {g:.0f} GFLOP/s" for p, g in record["matmul_peak_gflops_per_s"].items()), "",
             f"| case | precision | padding | real tokens/s | x vs {BASELINE} | useful GFLOP/s "
             "| of matmul peak | RSS after setup MiB | peak RSS MiB | saved activations MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["cases"]:
        speed = f"{r['speedup_vs_baseline']:.2f}" if r["speedup_vs_baseline"] else "-"
        lines.append(f"| {r['case']} | {r['precision']} | {r['padding_fraction']:.1%} | "
                     f"{r['tokens_per_s']:.0f} | {speed} | {r['gflops_per_s']:.1f} | "
                     f"{r['fraction_of_peak']:.1%} | {r['rss_after_setup_mb']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['saved_activations_mb']:.0f} |")
    lines += ["", f"Each case: {record['steps']} steps of the preset's own batches "
              f"(the first untimed), real tokens = non-padding tokens embedded. Useful FLOPs per "
              f"real token: {record['cases'][0]['flops_per_token'] / 1e6:.0f} M "
              f"(4 x {record['cases'][0]['non_embedding_params'] / 1e6:.1f} M non-embedding "
              f"parameters + attention)." if record["cases"] else "",
              "", f"Model: {parts['params'] / 1e6:.1f} M parameters ({parts['trainable'] / 1e6:.2f} M "
              f"trainable): weights {parts['weights_fp32_mb']:.0f} MiB in fp32, a bf16 copy "
              f"{parts['weights_bf16_mb']:.0f} MiB, trainable optimizer state (fp32 master + "
              f"grad + 2 Adam moments) {parts['trainable_state_mb']:.0f} MiB."]
    lines += [f"- skipped {s}" for s in record["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""GPU validation of the 7B path (see benchmarks/gpu/README.md).

1. One bf16 DeepSpeed ZeRO-3 training step (LoRA r16 + paper head, InfoNCE on a random batch,
   gradient checkpointing) of a Mistral-7B-shaped m5 model: random weights, real dimensions.
   Layers are cut only when `poolattn plan` says the card cannot hold 32 (recorded).
   Peak CUDA memory is recorded next to the plan's prediction for the same settings.
2. An m5 model of the same width (fewer layers) exported to ONNX (dynamo, opset 18, external
   data: toolchain.export.onnx_export) and timed on ONNX Runtime's CUDA provider against PyTorch.
3. Results: benchmarks/results/gpu_<gpu-name>.json and .md.

    python benchmarks/gpu/run_gpu_validation.py                        # 1 GPU
    deepspeed --num_gpus 8 benchmarks/gpu/run_gpu_validation.py        # 8 GPUs
    python benchmarks/gpu/run_gpu_validation.py --dry-run --out /tmp/x # CPU smoke test, tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolchain.modeling.shapes import MODEL_SHAPES, ModelShape  # noqa: E402

if TYPE_CHECKING:
    from toolchain.plan import MemoryPlan

# --dry-run: the same code path at toy width on CPU (fp32, DeepSpeed ZeRO-3 engine on gloo).
TINY_SHAPE = ModelShape(hidden_size=64, num_layers=2, intermediate_size=224, num_heads=4,
                        num_kv_heads=2, vocab_size=1000)
INLINE_ZERO3 = {  # used when ds_configs/zero3.json is absent
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto",
                                              "torch_adam": "auto"}},
    "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                          "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                          "stage3_param_persistence_threshold": "auto"},
    "steps_per_print": 10**9,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny 2-layer version on CPU")
    p.add_argument("--layers", type=int, default=None, help="training layers (default: 32, "
                   "fewer only if the plan says the card cannot hold them)")
    p.add_argument("--head", choices=["paper", "compact"], default="paper")
    p.add_argument("--queries", type=int, default=4, help="queries per GPU (+1 positive, +1 neg)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--export-layers", type=int, default=4)
    p.add_argument("--export-head", choices=["paper", "compact"], default="paper")
    p.add_argument("--bench-shapes", default="8x128,8x512", help="batch x seq to time")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-export", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    # the deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment is used
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dry_run:
        args.layers, args.export_layers = 2, 2
        args.head = args.export_head = "compact"
        args.queries, args.seq_len, args.repeats = 2, 32, 2
        args.bench_shapes = "2x16"
    args.bench = [tuple(int(v) for v in s.split("x")) for s in args.bench_shapes.split(",")]
    return args


def build_model(shape: ModelShape, layers: int, head_size: str, dtype, device: str):
    """m5 (bidirectional, multi-layer Perceiver head) at ``shape`` with random weights."""
    import torch
    from transformers import MistralConfig, MistralModel

    from toolchain.modeling.model import EmbeddingModel
    from toolchain.modeling.pooling import HeadConfig, build_pooler
    from toolchain.modeling.variants import resolve_variant

    variant = resolve_variant("m5")
    config = MistralConfig(hidden_size=shape.hidden_size, num_hidden_layers=layers,
                           intermediate_size=shape.intermediate_size,
                           num_attention_heads=shape.num_heads,
                           num_key_value_heads=shape.num_kv_heads, vocab_size=shape.vocab_size,
                           max_position_embeddings=4096)
    config.is_causal = False
    config._attn_implementation = "sdpa"
    head_config = HeadConfig.from_size(head_size, pooling=variant.pooling,
                                       attention=variant.attention,
                                       hidden_size=shape.hidden_size, num_layers=layers)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: no fp32 copy of 7 B on the card
    try:
        torch.manual_seed(0)
        with torch.device(device):
            backbone, head = MistralModel(config), build_pooler(head_config)
    finally:
        torch.set_default_dtype(default)
    return EmbeddingModel(backbone, head, tokenizer=None, variant=variant)


def ds_config(world: int, micro_batch: int, hidden: int, on_gpu: bool) -> tuple[dict, str]:
    """ds_configs/zero3.json with its "auto" values filled (inline copy if the file is absent)."""
    path = ROOT / "ds_configs" / "zero3.json"
    template, source = (json.loads(path.read_text()), str(path)) if path.is_file() else (
        INLINE_ZERO3, "inline")
    values = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
              "train_batch_size": micro_batch * world, "gradient_clipping": 1.0,
              "bf16.enabled": on_gpu, "optimizer.params.lr": 1e-5,
              "optimizer.params.weight_decay": 0.01,
              "optimizer.params.torch_adam": True,  # no FusedAdam JIT build (needs nvcc)
              "zero_optimization.reduce_bucket_size": hidden * hidden,
              "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
              "zero_optimization.stage3_param_persistence_threshold": 10 * hidden}

    from toolchain.train.ds_config import fill_auto

    return fill_auto(template, values, source), source


def plan_for(shape: ModelShape, args, world: int, precision: str) -> MemoryPlan:
    """`poolattn plan` for exactly this step (one chunk = the whole local batch)."""
    from toolchain.plan import PlanSettings, plan_memory

    texts = args.queries * 3
    settings = PlanSettings(preset=f"mistral-7b-shape-{shape.num_layers}L", variant="m5",
                            head_size=args.head, gpus=world, zero_stage=3, chunk_size=texts,
                            seq_len=args.seq_len, batch_size=args.queries * world,
                            precision=precision, gradient_checkpointing=True)
    return plan_memory(settings, shape, with_deepspeed=False)


def choose_layers(args, shape: ModelShape, world: int, card_bytes: int) -> tuple[int, str]:
    """32 layers unless the plan exceeds 90 % of the card; then the most that fit."""
    if args.layers:
        return args.layers, "set by --layers"
    for layers in range(shape.num_layers, 0, -1):
        plan = plan_for(dataclasses.replace(shape, num_layers=layers), args, world, "bf16")
        if plan.total(True) <= 0.9 * card_bytes:
            reason = "all layers" if layers == shape.num_layers else (
                f"reduced: the plan puts {shape.num_layers} layers above 90 % of the card")
            return layers, reason
    raise SystemExit("error: not even one layer fits this card according to the plan")


def train_step(args, shape: ModelShape, device: str, world: int) -> dict:
    """Two InfoNCE steps (the second timed) under the DeepSpeed ZeRO-3 engine (bf16 on GPU,
    fp32 on CPU for the dry run)."""
    import torch

    from toolchain.modeling.lora import LoraSettings, apply_lora
    from toolchain.train.loss import info_nce

    on_gpu = device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    card = torch.cuda.get_device_properties(device).total_memory if on_gpu else 0
    layers, reason = choose_layers(args, shape, world, card) if on_gpu else (args.layers, "dry run")
    model = apply_lora(build_model(shape, layers, args.head, dtype, device), LoraSettings())
    model.backbone.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    texts = args.queries * 3
    config, source = ds_config(world, texts, shape.hidden_size, on_gpu)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count = sum(p.numel() for p in trainable)  # before ZeRO-3 partitions them
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
    gen = torch.Generator().manual_seed(1)
    losses, seconds = [], 0.0
    for _ in range(2):
        ids = torch.randint(3, shape.vocab_size, (texts, args.seq_len), generator=gen).to(device)
        mask = torch.ones_like(ids)
        mask[::2, : args.seq_len // 4] = 0  # left padding on every other text
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        emb = engine(ids, mask)  # (3Q, H): queries, positives, negatives
        q, pos, neg = emb.split(args.queries)
        loss = info_nce(q, pos, neg, temperature=0.05).loss
        engine.backward(loss)
        engine.step()
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        losses.append(float(loss.detach()))
    sized = dataclasses.replace(shape, num_layers=layers)
    plan = plan_for(sized, args, world, "bf16" if on_gpu else "fp32")
    name = f"DeepSpeed ZeRO-{config['zero_optimization']['stage']}" + (
        "" if on_gpu else " on CPU (dry run, gloo, fp32)")
    result = {"engine": name, "layers": layers, "layers_note": reason, "head": args.head,
              "world_size": world,
              "queries_per_gpu": args.queries, "texts_per_gpu": texts, "seq_len": args.seq_len,
              "precision": str(dtype).replace("torch.", ""), "ds_config": source,
              "zero_stage": config["zero_optimization"]["stage"], "gradient_checkpointing": True,
              "losses": losses, "loss_finite": all(math.isfinite(v) for v in losses),
              "step_seconds": round(seconds, 3),
              "trainable_params": trainable_count,
              "plan_total_bytes": plan.total(True)}
    if on_gpu:
        peak = torch.cuda.max_memory_allocated(device)
        result.update(peak_allocated_bytes=peak,
                      peak_reserved_bytes=torch.cuda.max_memory_reserved(device),
                      plan_error=plan.total(True) / peak - 1)
    return result


def export_and_time(args, shape: ModelShape, device: str, workdir: Path) -> dict:
    """Export an m5 model (fp32) and time ONNX Runtime (CUDA provider) against PyTorch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from toolchain.export.onnx_export import MODEL_FILE, export_onnx

    model = build_model(shape, args.export_layers, args.export_head, torch.float32, "cpu").eval()
    info = export_onnx(model, workdir)
    wanted = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    available = ort.get_available_providers()
    session = ort.InferenceSession(str(workdir / MODEL_FILE),
                                   providers=[p for p in dict.fromkeys((wanted, "CPUExecutionProvider"))
                                              if p in available])
    provider = session.get_providers()[0]
    facts = {"layers": args.export_layers, "head": args.export_head, "precision": "fp32",
             "ort_provider": provider, "ort_cuda_missing": provider != wanted,
             "ort_version": ort.__version__, "export": info, "timings": []}
    if provider != wanted:  # a multi-GB graph on the CPU provider would take hours: say so
        facts["skipped"] = (f"ONNX Runtime gave {provider}, not {wanted}: install onnxruntime-gpu "
                            "(`make venv ORT_EXTRA=gpu`) with CUDA 13 + cuDNN 9 libraries")
        return facts
    model = model.to(device)
    for batch, seq in args.bench:
        gen = torch.Generator().manual_seed(2)
        ids = torch.randint(3, shape.vocab_size, (batch, seq), generator=gen)
        mask = torch.ones_like(ids)
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        with torch.no_grad():
            torch_s, ref = _timed(lambda: model(ids.to(device), mask.to(device)), args.repeats,
                                  device)
        ort_s, got = _timed(lambda: session.run(None, feeds)[0], args.repeats, "cpu")
        facts["timings"].append({
            "batch": batch, "seq_len": seq, "torch_ms": round(1e3 * torch_s, 2),
            "ort_ms": round(1e3 * ort_s, 2), "ort_vs_torch": round(ort_s / torch_s, 3),
            "max_abs_diff": float(np.abs(got - ref.float().cpu().numpy()).max())})
    return facts


def _timed(fn, repeats: int, device: str):
    """Median seconds of ``fn`` after 3 burn-in calls (synchronised on CUDA), and its output."""
    import statistics

    import torch

    for _ in range(3):
        out = fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def gpu_name(device: str) -> str:
    """File-safe GPU name, e.g. nvidia-h100-80gb-hbm3 ("cpu-dry-run" off GPU)."""
    import torch

    if not device.startswith("cuda"):
        return "cpu-dry-run"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def render_markdown(results: dict) -> str:
    gib = 2**30
    lines = [f"# GPU validation: {results['gpu']}", "", f"Command: `{results['command']}`",
             f"torch {results['versions']['torch']}, deepspeed {results['versions']['deepspeed']}, "
             f"transformers {results['versions']['transformers']}", ""]
    t = results.get("train")
    if t:
        lines += [f"## Training step: {t['engine']} (Mistral-7B shape, random weights)", "",
                  f"- layers {t['layers']} ({t['layers_note']}), {t['head']} head, m5, LoRA r16, "
                  f"{t['precision']}, gradient checkpointing, {t['world_size']} GPU(s), "
                  f"{t['texts_per_gpu']} texts x {t['seq_len']} tokens per GPU",
                  f"- losses {t['losses']}, step {t['step_seconds']} s",
                  f"- plan (`poolattn plan`, same settings): {t['plan_total_bytes'] / gib:.2f} GiB"]
        if "peak_allocated_bytes" in t:
            lines.append(f"- measured peak allocated {t['peak_allocated_bytes'] / gib:.2f} GiB "
                         f"(plan error {t['plan_error']:+.1%}), reserved "
                         f"{t['peak_reserved_bytes'] / gib:.2f} GiB")
        lines.append("")
    e = results.get("export")
    if e:
        lines += [f"## ONNX export (m5, {e['layers']} layers, {e['head']} head, fp32) on "
                  f"{e['ort_provider']}", "",
                  f"export {e['export']['export_seconds']} s, external data "
                  f"{e['export']['external_data']}, onnxruntime {e['ort_version']}",
                  *([f"**Timing skipped**: {e['skipped']}"] if "skipped" in e else []), "",
                  "| batch x seq | torch ms | ORT ms | ORT / torch | max abs diff |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['batch']} x {r['seq_len']} | {r['torch_ms']} | {r['ort_ms']} | "
                  f"{r['ort_vs_torch']} | {r['max_abs_diff']:.2e} |" for r in e["timings"]]
    return "\n".join(lines) + "\n"


def _init_distributed(device: str) -> tuple[int, int]:
    """(rank, world) under the deepspeed launcher or torchrun; a 1-process group otherwise
    (nccl on GPU, gloo for the CPU dry run; an existing group is reused)."""
    import deepspeed
    import torch.distributed as dist

    from toolchain.train.launch import ensure_single_process_env

    ensure_single_process_env()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tempfile

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device visible (torch.cuda.is_available() is False). This script "
              "validates the 7B path on a GPU node; on a CPU machine run it with --dry-run.",
              file=sys.stderr)
        return 2
    shape = TINY_SHAPE if args.dry_run else MODEL_SHAPES["mistral-7b"]
    if args.dry_run:
        device = "cpu"
        rank, world = _init_distributed(device)
    else:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
        rank, world = _init_distributed(device)
    command = " ".join(["benchmarks/gpu/run_gpu_validation.py", *(argv or sys.argv[1:])])
    results = {"gpu": gpu_name(device), "command": command, "dry_run": args.dry_run,
               "versions": _versions()}
    if not args.skip_train:
        results["train"] = train_step(args, shape, device, world)
        if device.startswith("cuda"):
            import gc

            gc.collect()
            torch.cuda.empty_cache()
    if rank == 0 and not args.skip_export:
        with tempfile.TemporaryDirectory() as tmp:
            results["export"] = export_and_time(args, shape, device, Path(tmp))
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"gpu_{results['gpu']}"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        stem.with_suffix(".md").write_text(render_markdown(results))
        print(render_markdown(results))
        print(f"wrote {stem}.json and {stem}.md")
    return 0


def _versions() -> dict:
    import importlib.metadata as md

    names = ("torch", "deepspeed", "transformers", "peft", "onnx", "onnxruntime", "onnxruntime-gpu")
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())

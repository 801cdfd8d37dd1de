"""Check `poolattn plan` against measured memory: a plain-torch LoRA forward + backward of an
EmbeddingModel on CPU (fp32), peak resident memory read in a fresh process.

Measured: RSS growth while building the model (vs. the plan's fp32 parameters) and the peak RSS
growth during forward + backward of one chunk (vs. the plan's activations + gradients). The
peak is Linux's VmHWM, reset just before the step (/proc/self/clear_refs), so model building
does not mask it.

    .venv/bin/python benchmarks/plan_check/plan_check.py --out benchmarks/results/plan_check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from any directory, installed or not

MIB = 2**20
COMMAND = "python benchmarks/plan_check/plan_check.py"


@dataclass(frozen=True)
class CheckCase:
    """One measurement: a preset (or ``smollm2-shape``: SmolLM2 dimensions, random weights)."""

    preset: str
    variant: str = "m5"
    chunk: int = 8
    seq_len: int = 128
    head_size: str = "compact"
    checkpointing: bool = False


# The shipped matrix: the tiny preset and a SmolLM2-shaped model, with and without checkpointing.
CASES = (
    CheckCase("tiny-mistral", "m5", 8, 128),
    CheckCase("tiny-mistral", "m5", 8, 128, checkpointing=True),
    CheckCase("smollm2-shape", "m5", 4, 128),
    CheckCase("smollm2-shape", "m1", 4, 128),
    CheckCase("smollm2-shape", "m5", 4, 128, checkpointing=True),
    CheckCase("smollm2-shape", "m5", 8, 64, head_size="paper"),
)


def check_preset(name: str):
    """A Preset for ``name``; ``smollm2-shape`` is SmolLM2-135M's architecture, random weights."""
    from toolchain.presets import BackboneSpec, Preset, load_preset

    if name != "smollm2-shape":
        return load_preset(name)
    config = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 2048}
    return Preset(name=name, backbone=BackboneSpec(source="config", architecture="llama",
                                                   tokenizer="smollm2-tokenizer", config=config))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(case: CheckCase) -> dict:
    """Run the case in THIS process (call through :func:`measure_isolated`): bytes measured."""
    import torch

    from toolchain.assets import fetch_asset
    from toolchain.modeling import build_embedding_model
    from toolchain.modeling.lora import LoraSettings, apply_lora

    import peft  # noqa: F401  (imports are not the model: load them before the first reading)
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    preset = check_preset(case.preset)
    AutoTokenizer.from_pretrained(str(fetch_asset(preset.backbone.tokenizer or "")))
    before = _status_kib("VmRSS")
    model = build_embedding_model(preset, case.variant,
                                  head_size=case.head_size, verify=False)
    model = apply_lora(model, LoraSettings())
    if case.checkpointing:
        model.backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    vocab = model.backbone.config.vocab_size
    ids = torch.randint(3, vocab, (case.chunk, case.seq_len))
    mask = torch.ones_like(ids)
    mask[0, : case.seq_len // 4] = 0  # some left padding, as in training
    target = torch.randn(case.chunk, model.head_config.hidden_size)
    built = _status_kib("VmRSS")
    model(ids[:1, :8], mask[:1, :8]).sum().backward()  # warm-up: autograd/oneDNN one-time state
    model.zero_grad(set_to_none=True)
    start = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    embedding = model(ids, mask)
    (embedding * target).sum().backward()  # GradCache's surrogate loss
    peak = _status_kib("VmHWM")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_bytes": (built - before) * 1024, "step_peak_bytes": (peak - start) * 1024,
            "trainable": trainable}


def measure_isolated(case: CheckCase, live: bool = True) -> dict:
    """Measure ``case`` in a fresh interpreter (clean allocator, its own peak).

    ``live``: fix glibc's mmap threshold at 128 KiB so every freed tensor goes back to the OS
    and RSS follows live tensors; otherwise glibc's dynamic threshold keeps freed per-layer
    temporaries resident (allocator retention, reported separately)."""
    # this script again, in measuring mode (see main): nothing but the case runs in the child
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure",
                           json.dumps(asdict(case))], capture_output=True, text=True,
                          env=_env(live))
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env(live: bool) -> dict:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if live:
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    return env


def predict(case: CheckCase) -> dict:
    """The plan's fp32 figures for the case (1 process, no optimizer step)."""
    from toolchain.modeling.shapes import ModelShape
    from toolchain.plan import PlanSettings, plan_memory

    preset = check_preset(case.preset)
    settings = PlanSettings(preset=case.preset, variant=case.variant, head_size=case.head_size,
                            gpus=1, zero_stage=2, chunk_size=case.chunk, seq_len=case.seq_len,
                            batch_size=case.chunk, precision="fp32",
                            gradient_checkpointing=case.checkpointing)
    plan = plan_memory(settings, ModelShape.from_preset(preset), with_deepspeed=False)
    key = "gpu_ckpt" if case.checkpointing else "gpu_no_ckpt"
    step = sum(r[key] for r in plan.rows if r["component"].startswith(("acts:", "grads:")))
    c = plan.counts
    return {"params_bytes": 4 * c["total"], "step_peak_bytes": step, "trainable": c["trainable"]}


def run_checks(cases=CASES) -> list[dict]:
    """Measured vs. predicted for every case; errors are (predicted - measured) / measured."""
    rows = []
    for case in cases:
        live, default = measure_isolated(case), measure_isolated(case, live=False)
        want = predict(case)
        rows.append({**asdict(case), "measured": live, "measured_glibc_default": default,
                     "predicted": want,
                     "params_error": want["params_bytes"] / live["params_bytes"] - 1,
                     "step_error": want["step_peak_bytes"] / live["step_peak_bytes"] - 1,
                     "step_error_glibc_default":
                         want["step_peak_bytes"] / default["step_peak_bytes"] - 1})
    return rows


def render_markdown(rows: list[dict], command: str) -> str:
    """The comparison table (MiB) with the method, for benchmarks/results/plan_check.md."""
    lines = ["# `poolattn plan` vs measured peak memory (CPU, fp32)", "",
             f"Reproduce: `{command}` (10-15 minutes on 2 cores).", "",
             "Plain torch (no DeepSpeed): EmbeddingModel + peft LoRA (r16, alpha 32, dropout 0.1) "
             "on all 7 projections, one forward + backward of a chunk with GradCache's surrogate "
             "loss, 1 thread, each case in a fresh process. *params*: RSS growth while building "
             "the model vs the plan's 4 B x all parameters. *step*: peak RSS growth during the "
             "step (VmHWM, reset just before it) vs the plan's activation rows + fp32 gradients. "
             "*live*: glibc's mmap threshold fixed at 128 KiB, so freed tensors leave RSS and the "
             "peak is the peak of live tensors, which is what the plan models. *glibc default*: "
             "the dynamic threshold keeps freed per-layer temporaries resident (allocator "
             "retention, the analogue of the CUDA caching allocator's fragmentation that the "
             "plan's 10 % headroom stands for). Error = (plan - measured) / measured.", "",
             "| model | variant | head | chunk x seq | ckpt | params MiB meas / plan (err) "
             "| step MiB live / plan (err) | step MiB glibc default (err) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, d, p = r["measured"], r["measured_glibc_default"], r["predicted"]
        lines.append(f"| {r['preset']} | {r['variant']} | {r['head_size']} | {r['chunk']} x "
                     f"{r['seq_len']} | {'yes' if r['checkpointing'] else 'no'} | "
                     f"{m['params_bytes'] / MIB:.1f} / {p['params_bytes'] / MIB:.1f} "
                     f"({r['params_error']:+.1%}) | {m['step_peak_bytes'] / MIB:.1f} / "
                     f"{p['step_peak_bytes'] / MIB:.1f} ({r['step_error']:+.1%}) | "
                     f"{d['step_peak_bytes'] / MIB:.1f} ({r['step_error_glibc_default']:+.1%}) |")
    lines += ["", "Fixed costs the plan does not model (tokenizer, lazily imported modules, "
              "autograd bookkeeping: tens of MiB) dominate the tiny model's columns; at 7B they "
              "are noise. Trainable parameter counts agree exactly in every case (JSON: "
              "measured.trainable vs predicted.trainable)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--measure", metavar="CASE_JSON", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(CheckCase(**json.loads(args.measure)))))
        return
    rows = run_checks()
    command = COMMAND + (f" --out {args.out}" if args.out else "")
    text = render_markdown(rows, command)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

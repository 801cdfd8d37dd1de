"""`poolattn plan`: per-GPU memory plan of a training run at a preset's real shape (no weights)."""

from __future__ import annotations

import json

import click

from toolchain.plan import GIB, USABLE_FRACTION, MemoryPlan, model_state_bytes

EPILOG = """\b
Examples:
  poolattn plan --preset mistral-7b --gpus 8
  poolattn plan --preset mistral-7b --gpus 8 --zero 3 --offload --head compact
  poolattn plan --preset mistral-7b --gpus 8 --chunk-size 32 --json
  poolattn plan --preset qwen2-0.5b --gpus 1 --zero 2
  poolattn plan --preset mistral-7b --sweep --head compact
"""


def render_plan(plan: MemoryPlan) -> str:
    """A text table of the plan, the DeepSpeed comparison and the verdicts."""
    s, c, t = plan.settings, plan.counts, plan.texts
    lines = [f"plan: {s.preset} variant {s.variant}, {s.head_size} head, {s.gpus} GPU(s), "
             f"ZeRO-{s.zero_stage}{' + optimizer offload' if s.offload else ''}, {s.precision}",
             f"params: base {c['base'] / 1e9:.3f} B frozen, LoRA {c['lora'] / 1e6:.1f} M, head "
             f"{c['head'] / 1e6:.1f} M -> trainable {c['trainable'] / 1e6:.1f} M "
             f"({100 * c['trainable'] / c['total']:.2f} %)",
             f"batch: {s.batch_size} queries x {2 + s.negatives_per_query} texts = {t['global']} "
             f"texts/step, {t['local']} per GPU, "
             + (f"GradCache chunks of {t['chunk']} texts" if s.chunk_size else "no GradCache")
             + f" x {s.seq_len} tokens",
             "", f"{'component (per GPU)':<48}{'no ckpt GiB':>12}{'ckpt GiB':>10}{'CPU GiB':>9}"]
    for r in plan.rows:
        lines.append(f"{r['component']:<48}{r['gpu_no_ckpt'] / GIB:>12.2f}"
                     f"{r['gpu_ckpt'] / GIB:>10.2f}{r['cpu'] / GIB:>9.2f}")
    lines.append(f"{'TOTAL':<48}{plan.total(False) / GIB:>12.2f}{plan.total(True) / GIB:>10.2f}")
    if plan.deepspeed:
        d = plan.deepspeed
        lines += ["", f"model states, LoRA-aware: {model_state_bytes(plan) / GIB:.2f} GiB/GPU; "
                  f"DeepSpeed's estimator ({d['total_params'] / 1e9:.2f} B params, all assumed "
                  f"trainable): {d['gpu_bytes'] / GIB:.2f} GiB/GPU, "
                  f"{d['cpu_bytes_per_node'] / GIB:.1f} GiB CPU/node", f"  ({d['function']})"]
    lines += ["", f"fits = total <= {USABLE_FRACTION:.0%} of the card; * = the preset's setting"]
    chosen = "checkpointing" if s.gradient_checkpointing else "no_checkpointing"
    for mode, fits in plan.verdicts().items():
        verdict = ", ".join(f"{gb} GB {'fits' if ok else 'NO'}" for gb, ok in fits.items())
        lines.append(f"verdict {mode:<17}{'*' if mode == chosen else ' '} {verdict}")
    return "\n".join(lines)


def render_sweep(rows: list[dict]) -> str:
    """One line per (GPUs, ZeRO layout): model states, totals, fits on 80/40/24 GB."""
    lines = [f"{'GPUs':>4} {'ZeRO':<10}{'head':<8}{'chunk':>6}{'states GiB':>11}"
             f"{'no ckpt GiB':>12}{'ckpt GiB':>10}  fits (no ckpt | ckpt)"]
    for r in rows:
        fits = " | ".join(",".join(str(gb) for gb, ok in r["verdicts"][mode].items() if ok) or "-"
                          for mode in ("no_checkpointing", "checkpointing"))
        layout = f"{r['zero_stage']}{'+offload' if r['offload'] else ''}"
        lines.append(f"{r['gpus']:>4} {layout:<10}{r['head_size']:<8}{r['chunk']:>6}"
                     f"{r['model_states'] / GIB:>11.2f}{r['total_no_ckpt'] / GIB:>12.2f}"
                     f"{r['total_ckpt'] / GIB:>10.2f}  {fits}")
    return "\n".join(lines)


@click.command("plan", epilog=EPILOG)
@click.option("--preset", required=True, help="preset name or path (shape from its `shape:`)")
@click.option("--gpus", type=int, default=8, show_default=True, help="data-parallel GPUs")
@click.option("--zero", "zero_stage", type=click.Choice(["2", "3"]), default=None,
              help="ZeRO stage [default: the preset's train.zero_stage]")
@click.option("--offload/--no-offload", default=None, help="optimizer state on CPU (ZeRO-3)")
@click.option("--head", "head_size", type=click.Choice(["compact", "paper"]), default=None,
              help="head size [default: the preset's head_size]")
@click.option("--variant", default="m5", show_default=True, help="m1..m5 (m5: largest head input)")
@click.option("--chunk-size", type=int, default=None,
              help="GradCache texts per chunk; 0 = no GradCache [default: the preset's]")
@click.option("--seq-len", type=int, default=None,
              help="tokens per text [default: the preset's train.max_length]")
@click.option("--precision", type=click.Choice(["bf16", "fp32"]), default=None)
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="cpu: ranks are CPU processes (the rehearsal): adds each rank's peak RSS")
@click.option("--sweep", is_flag=True, help="one line per GPU count (1/2/4/8) x ZeRO layout")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
def plan_command(preset, gpus, zero_stage, offload, head_size, variant, chunk_size, seq_len,
                 precision, device, sweep, as_json) -> None:
    """Per-GPU memory (parameters, gradients, optimizer state, activations with and without
    gradient checkpointing) of training PRESET, next to DeepSpeed's estimators, and a verdict
    for 80 / 40 / 24 GB cards."""
    from toolchain.modeling.shapes import ModelShape
    from toolchain.plan import plan_memory, settings_for_preset
    from toolchain.plan import sweep as sweep_plans
    from toolchain.presets import load_preset

    loaded = load_preset(preset)
    if sweep:
        rows = sweep_plans(loaded, head_size=head_size, variant=variant, seq_len=seq_len,
                           precision=precision, chunk_size=chunk_size)
        click.echo(json.dumps(rows, indent=2) if as_json else render_sweep(rows))
        return
    overrides = dict(gpus=gpus, zero_stage=int(zero_stage) if zero_stage else None,
                     offload=offload, head_size=head_size, variant=variant, seq_len=seq_len,
                     precision=precision, chunk_size=chunk_size,  # 0 = no GradCache
                     device=device)
    settings = settings_for_preset(loaded, **overrides)
    plan = plan_memory(settings, ModelShape.from_preset(loaded))
    data = plan.to_dict()
    text = render_plan(plan)
    if device == "cpu":
        from toolchain.plan.cpu_rank import cpu_rank_peak

        data["cpu_rank"] = rank = cpu_rank_peak(plan)
        text += (f"\nCPU rank peak RSS: {rank['peak'] / GIB:.2f} GiB = runtime "
                 f"{rank['runtime'] / GIB:.2f} (measured here) + max(build {(rank['build'] - rank['runtime']) / GIB:.2f}, "
                 f"train {(rank['train'] - rank['runtime']) / GIB:.2f})")
    click.echo(json.dumps(data, indent=2) if as_json else text)


COMMANDS = [plan_command]

"""`poolattn train`: one variant, one run directory (a thin layer over toolchain.train)."""

from __future__ import annotations

import os
from pathlib import Path

import click

EPILOG = """\b
Examples:
  poolattn train --preset tiny-mistral --variant m5
  poolattn train --preset tiny-mistral --variant m1 --zero 3 --steps 20 --chunk-size 8
  poolattn train --preset tiny-mistral --variant m3 --nproc 2          # torchrun, gloo on CPU
  torchrun --nproc_per_node 8 -m toolchain.train.launch --preset mistral-7b --variant m5
Writes runs/<preset>/<variant>/: checkpoints/step-N/, final/, metrics.jsonl, ds_config.json,
train_config.json. A killed run resumes from its last checkpoint (--no-resume starts over).
"""

# CLI flag -> TrainConfig key (None means: keep the preset's value).
OVERRIDES = {"data": "data", "data_limit": "data_limit", "zero": "zero_stage", "offload": "offload", "steps": "steps",
             "batch_size": "batch_size", "chunk_size": "chunk_size", "grad_accum": "grad_accum",
             "max_length": "max_length", "lr": "lr", "warmup": "warmup_steps", "seed": "seed",
             "save_every": "save_every", "gradient_checkpointing": "gradient_checkpointing",
             "precision": "precision", "temperature": "temperature",
             "negatives": "negatives_per_query", "weight_decay": "weight_decay",
             "group_rows": "group_rows", "head_lr": "head_lr"}


@click.command("train", epilog=EPILOG)
@click.option("--preset", default="tiny-mistral", show_default=True, help="preset name or path")
@click.option("--variant", default=None, help="m1..m5")
@click.option("--pooling", default=None, help="explicit pooling (with --attention)")
@click.option("--attention", default=None, help="causal | bidirectional (with --pooling)")
@click.option("--data", default=None,
              help="training JSONL (default: the preset's train.data, relative to the repository)")
@click.option("--data-limit", type=int, default=None, help="use only the first N rows")
@click.option("--zero", type=int, default=None, help="DeepSpeed ZeRO stage: 2 or 3")
@click.option("--offload/--no-offload", default=None, help="optimizer state on CPU (ZeRO-3)")
@click.option("--steps", type=int, default=None, help="optimizer steps")
@click.option("--batch-size", type=int, default=None, help="contrastive batch (queries, all ranks)")
@click.option("--chunk-size", type=int, default=None, help="GradCache chunk (texts); 0 = off")
@click.option("--grad-accum", type=int, default=None, help="contrastive batches per step")
@click.option("--max-length", type=int, default=None, help="tokens per text, EOS included")
@click.option("--lr", type=float, default=None, help="peak learning rate")
@click.option("--head-lr", type=float, default=None, help="peak learning rate of the pooling head")
@click.option("--warmup", type=int, default=None, help="linear warm-up steps")
@click.option("--seed", type=int, default=None, help="seed (head init, data order, dropout)")
@click.option("--save-every", type=int, default=None, help="checkpoint every N steps")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="recompute activations in backward")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default=None,
              help="auto: bf16 on a GPU or a CPU with bf16 units (AMX / AVX512-BF16), else fp32")
@click.option("--group-rows", type=int, default=None,
              help="texts per forward pass, sorted by length; 0 = one padded pass")
@click.option("--temperature", type=float, default=None, help="InfoNCE temperature on cosine")
@click.option("--negatives", type=int, default=None, help="hard negatives per query")
@click.option("--weight-decay", type=float, default=None, help="AdamW weight decay (matrices)")
@click.option("--run-dir", type=click.Path(), default=None,
              help="default: runs/<preset>/<variant>")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="continue from the run directory's last checkpoint")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="processes on this machine (>1: re-launched under torchrun)")
@click.option("--local_rank", "--local-rank", "local_rank", type=int, default=None, hidden=True,
              help="set by the deepspeed launcher; LOCAL_RANK is used instead")
@click.pass_context
def train_command(ctx: click.Context, preset, variant, pooling, attention, run_dir, resume,
                  nproc, local_rank, **flags) -> None:
    """Train one variant with LoRA + its pooling head (InfoNCE, DeepSpeed ZeRO)."""
    from toolchain.presets import load_preset
    from toolchain.train import TrainRecipe, config_for_preset, recipe_main
    from toolchain.train.launch import launched_world_size, relaunch

    loaded = load_preset(preset)
    if flags.get("data"):  # on the command line a relative path means the working directory
        flags["data"] = str(Path(flags["data"]).resolve())
    config = config_for_preset(loaded, **{OVERRIDES[k]: v for k, v in flags.items()})
    options = dict(variant=variant, pooling=pooling, attention=attention, run_dir=run_dir,
                   resume=resume)
    if nproc < 1:
        raise click.BadParameter("must be >= 1", param_hint="--nproc")
    if nproc > 1 and launched_world_size() == 1:
        TrainRecipe(loaded, config, world_size=nproc, **options)  # fail here, before any launch
        code = relaunch(_child_args(ctx), nproc)
        if code:
            ctx.exit(code)
        return
    losses = recipe_main(loaded, config, **options)
    if losses and os.environ.get("RANK", "0") == "0":
        click.echo(f"trained {len(losses)} steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def _child_args(ctx: click.Context) -> list[str]:
    """The options this command was given, minus --nproc (for the per-rank processes)."""
    args = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in ("nproc", "local_rank") or value is None:
            continue
        if isinstance(param, click.Option) and param.is_bool_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args


COMMANDS = [train_command]

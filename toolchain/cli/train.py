"""`poolattn train`: one variant, one run directory (a thin layer over toolchain.train)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import click

from toolchain.train.settings import TrainSetting, overrides_from_flags, train_settings

EPILOG = """\b
Examples:
  poolattn train --preset tiny-mistral --variant m5
  poolattn train --preset tiny-mistral --variant m1 --zero 3 --steps 20 --chunk-size 8
  poolattn train --preset tiny-mistral --variant m3 --nproc 2          # torchrun, gloo on CPU
  torchrun --nproc_per_node 8 -m toolchain.cli.train_rank --preset mistral-7b --variant m5
Writes runs/<preset>/<variant>/: checkpoints/step-N/, final/, metrics.jsonl, ds_config.json,
train_config.json. A killed run resumes from its last checkpoint (--no-resume starts over).
A setting flag left out keeps the preset's value (its train: key is in brackets).
"""


def _epilog() -> str:
    """EPILOG plus the settings only a preset can hold (no flag)."""
    preset_only = [f"  train.{s.key}: {s.help}" for s in train_settings() if s.preset_only]
    if not preset_only:
        return EPILOG
    return EPILOG + "\n\b\nPreset-only settings (the preset's train: section):\n" + "\n".join(preset_only)


def _setting_option(setting: TrainSetting) -> Callable:
    """One click option for a TrainConfig setting; default None keeps the preset's value."""
    help_text = f"{setting.help} [train.{setting.key}]"
    if setting.kind is bool:
        return click.option(f"{setting.flag}/--no-{setting.flag[2:]}", setting.name, default=None,
                            help=help_text)
    if setting.choices:
        kind = click.Choice(setting.choices)
    else:  # a list setting is comma-separated text (split in overrides_from_flags)
        kind = {int: click.INT, float: click.FLOAT}.get(setting.kind, click.STRING)
    return click.option(setting.flag, setting.name, type=kind, default=None, help=help_text)


def setting_options(command: Callable) -> Callable:
    """Decorator: the options of every TrainConfig setting that has a flag, in field order."""
    for setting in reversed(train_settings()):
        if not setting.preset_only:
            command = _setting_option(setting)(command)
    return command


@click.command("train", epilog=_epilog())
@click.option("--preset", default="tiny-mistral", show_default=True, help="preset name or path")
@click.option("--variant", default=None, help="m1..m5")
@click.option("--pooling", default=None, help="explicit pooling (with --attention)")
@click.option("--attention", default=None, help="causal | bidirectional (with --pooling)")
@setting_options
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
    config = config_for_preset(loaded, **overrides_from_flags(flags))
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

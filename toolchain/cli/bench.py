"""Benchmark commands: `bench latency`, `bench quality`, `bench all` and `compare`
(`bench load` lives with `serve` in toolchain/cli/serve.py).

A violated budget exits 1 after printing a violations table; bad input exits 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from toolchain.atomic import write_text_atomic
from toolchain.bench.latency import ALL_GRID, DEFAULT_GRID

BUDGET_HELP = "budget YAML (benchmarks/budgets/default.yaml); violations exit 1"


def _budget_gate(budget, **results) -> None:
    """Check results against a loaded budget; print the table and exit 1 on violations."""
    from toolchain.bench.budget import check_budget, format_violations

    violations = check_budget(budget, **results)
    if violations:
        click.echo(f"\nbudget {budget.path}: {len(violations)} violation(s)")
        click.echo(format_violations(violations))
        sys.exit(1)
    click.echo(f"\nbudget {budget.path}: all limits met")


def _write_json(path: str | None, data) -> None:
    if path:
        write_text_atomic(Path(path), json.dumps(data, indent=2, default=str) + "\n")
        click.echo(f"wrote {path}")


@click.group("bench", epilog="Example: poolattn bench all --preset tiny-mistral")
def bench_group() -> None:
    """Latency, quality and budget checks of exported artifacts."""


@bench_group.command("latency", epilog="Examples:\n\n\b\n"
                     "  poolattn bench latency runs/tiny-mistral/m1/onnx-fp32 "
                     "runs/tiny-mistral/m5/onnx-fp32\n"
                     "  poolattn bench latency runs/tiny-mistral/m3/onnx-int8 --grid 8x128 "
                     "--threads 2 --no-torch")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--grid", default=DEFAULT_GRID, show_default=True, help="BATCHxSEQ_LEN,...")
@click.option("--warmup", default=3, show_default=True, help="untimed runs per shape")
@click.option("--repeats", default=20, show_default=True, help="timed runs per shape")
@click.option("--threads", type=int, default=None, help="intra-op threads (default: runtime's)")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu",
              show_default=True, help="ONNX Runtime provider")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="also time each ONNX artifact's merged PyTorch model")
@click.option("--split/--no-split", default=True, show_default=True,
              help="cost split: backbone alone vs head alone (torch, cached features)")
@click.option("--split-threads", type=int, default=1, show_default=True,
              help="torch threads of the cost split (0: same as --threads)")
@click.option("--max-seconds", type=float, default=20.0, show_default=True,
              help="stop a shape's timed runs after this long (at least 3 runs)")
@click.option("--budget", "budget_file", type=click.Path(), default=None, help=BUDGET_HELP)
@click.option("--out", type=click.Path(), default=None, help="write all rows as JSON here")
def latency_command(artifacts, grid, warmup, repeats, threads, provider, with_torch, split,
                    split_threads, max_seconds, budget_file, out) -> None:
    """p50/p95/p99, texts/s and tokens/s of ARTIFACTS on ONNX Runtime (and PyTorch), the added
    cost of each pooling head over eos_last, and analytic head FLOPs at named model shapes."""
    from toolchain.bench.artifacts import inspect_artifact
    from toolchain.bench.budget import load_budget
    from toolchain.bench.latency import machine_info
    from toolchain.bench.pipeline import LatencySettings, run_latency
    from toolchain.bench.report import (analytic_markdown, latency_markdown, rows_at_length,
                                        split_markdown)
    from toolchain.modeling.variants import VARIANTS

    budget = load_budget(budget_file) if budget_file else None  # fail fast on a bad file
    settings = LatencySettings(grid=grid, warmup=warmup, repeats=repeats, threads=threads,
                               provider=provider, with_torch=with_torch, split=split,
                               split_threads=split_threads or None, max_seconds=max_seconds)
    found = [inspect_artifact(a) for a in artifacts]
    result = run_latency(found, settings)
    click.echo(latency_markdown(result["latency"]))
    if result["split"]:
        click.echo("\n" + result["split_method"] + "\n\n" + split_markdown(result["split"]))
    click.echo("\nAnalytic head cost per text (128 tokens or the nearest measured length):\n"
               + analytic_markdown(rows_at_length(result["analytic"], 128)))
    _write_json(out, {"machine": machine_info(), "settings": vars(settings), **result})
    if budget is not None:
        variants = [VARIANTS[a.variant] for a in found if a.variant in VARIANTS]
        _budget_gate(budget, latency=result["latency"], split=result["split"], variants=variants)


@bench_group.command("quality", epilog="Examples:\n\n\b\n"
                     "  poolattn bench quality runs/tiny-mistral/m1/onnx-fp32 "
                     "runs/tiny-mistral/m5/onnx-fp32 --limit 50\n"
                     "  poolattn bench quality runs/a/m1/merged runs/b/m1/merged "
                     "--label a-m1 --label b-m1\n"
                     "  poolattn bench quality runs/tiny-mistral/untrained-mean/merged --merge")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--label", "labels", multiple=True,
              help="name of each artifact's results, one per artifact in order "
                   "(default: <preset>/<run>/<profile> from its path)")
@click.option("--tasks", default=None, help="comma-separated task names (default: whole suite)")
@click.option("--limit", type=int, default=None, help="at most N examples per task")
@click.option("--threads", type=int, default=None)
@click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="also score each task in N disjoint shards (for compare --unit shard)")
@click.option("--out", type=click.Path(), default=None,
              help="output directory (default: runs/<preset>/bench beside the first artifact)")
@click.option("--merge", is_flag=True,
              help="keep the models already in OUT/quality.json (same tasks, limit, shards)")
@click.option("--budget", "budget_file", type=click.Path(), default=None, help=BUDGET_HELP)
def quality_command(artifacts, labels, tasks, limit, threads, shards, out, merge,
                    budget_file) -> None:
    """Evaluate ARTIFACTS on the task suite via mteb: result files + quality.json summary.
    Every label is checked for collisions before anything is evaluated; a budget holds the
    trained variants only (baselines are references)."""
    from toolchain.bench.artifacts import inspect_artifact
    from toolchain.bench.budget import load_budget
    from toolchain.bench.quality import evaluate_artifacts, format_quality, trained_only
    from toolchain.errors import ToolchainError

    budget = load_budget(budget_file) if budget_file else None
    if labels and len(labels) != len(artifacts):
        raise ToolchainError(f"{len(labels)} --label for {len(artifacts)} artifacts: give one "
                             f"per artifact, in order")
    found = [inspect_artifact(a, label) for a, label in
             zip(artifacts, labels or [None] * len(artifacts))]
    out_dir = Path(out) if out else found[0].path.parent.parent / "bench"
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    summary = evaluate_artifacts(found, out_dir, names, limit, threads=threads, shards=shards,
                                 merge=merge)
    click.echo(format_quality(summary["models"]))
    click.echo(f"wrote {out_dir / 'quality.json'}")
    if budget is not None:
        _budget_gate(budget, quality=trained_only(summary["models"]))


@bench_group.command("all", epilog="Example (what `make bench` runs):\n\n\b\n"
                     "  poolattn bench all --preset tiny-mistral --variants 'm1 m2 m3 m4 m5' "
                     "--budget benchmarks/budgets/default.yaml")
@click.option("--preset", required=True, help="runs/<preset>/<variant>/ hold the artifacts")
@click.option("--variants", default="m1 m2 m3 m4 m5", show_default=True)
@click.option("--grid", default=ALL_GRID, show_default=True)
@click.option("--warmup", default=1, show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--max-seconds", type=float, default=2.0, show_default=True)
@click.option("--split-threads", type=int, default=1, show_default=True,
              help="torch threads of the cost split (0: same as --threads)")
@click.option("--profiles", default="onnx-fp32,onnx-int8,merged", show_default=True,
              help="artifact directories per variant to time (those present)")
@click.option("--quality-profile", default="onnx-fp32", show_default=True,
              help="which artifact per variant is evaluated for quality")
@click.option("--tasks", default=None, help="comma-separated task names (default: whole suite)")
@click.option("--limit", type=int, default=200, show_default=True,
              help="at most N examples per task (0: the whole suite)")
@click.option("--quality/--no-quality", default=True, show_default=True,
              help="--no-quality: no evaluation; the report uses the output directory's "
                   "quality.json when there is one (scored in parts by bench quality --merge)")
@click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="also score each task in N disjoint shards (for compare --unit shard)")
@click.option("--baselines", default="auto", show_default=True,
              help="quality baselines evaluated beside the variants: auto (every one built "
                   "by `poolattn baseline` under runs/<preset>/), none, or names "
                   "(untrained-eos,untrained-mean,minilm-peer; required to exist)")
@click.option("--exclude-task", "exclude_tasks", multiple=True,
              default=("WordNetDefinitionRetrieval",), show_default=True,
              help="in-domain task(s) left out of the 'overall excl. in-domain' test")
@click.option("--load-variants", default="m1 m5", show_default=True,
              help="variants served on loopback for a short load level (none: skip)")
@click.option("--load-rates", default="20", show_default=True, help="offered requests/s")
@click.option("--load-seconds", default=3.0, show_default=True, help="per load level")
@click.option("--budget", "budget_file", type=click.Path(), default=None, help=BUDGET_HELP)
@click.option("--out", type=click.Path(), default=None, help="default: runs/<preset>/bench")
def all_command(preset, variants, grid, warmup, repeats, threads, max_seconds,
                split_threads, profiles, quality_profile, tasks, limit, quality, shards,
                baselines, exclude_tasks, load_variants, load_rates, load_seconds, budget_file,
                out) -> None:
    """Latency + cost split + quality + compare + report (+ budget) over a preset's variants;
    quality also evaluates the baselines (latency and budget: variants only)."""
    from toolchain.bench.budget import format_violations, load_budget
    from toolchain.bench.load import parse_rates
    from toolchain.bench.pipeline import AllSettings, LatencySettings, run_all

    budget = load_budget(budget_file) if budget_file else None
    chosen = {"auto": None, "none": ()}.get(baselines.strip())
    if baselines.strip() not in ("auto", "none"):
        chosen = tuple(b.strip() for b in baselines.replace(",", " ").split() if b.strip())
    settings = AllSettings(
        latency=LatencySettings(grid=grid, warmup=warmup, repeats=repeats, threads=threads,
                                split_threads=split_threads or None, max_seconds=max_seconds),
        profiles=tuple(p.strip() for p in profiles.split(",") if p.strip()),
        quality_profile=quality_profile,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else None,
        limit=limit or None, quality=quality, shards=shards, baselines=chosen,
        exclude_tasks=tuple(t for t in exclude_tasks if t != "none"),
        load_variants=tuple(v for v in load_variants.replace(",", " ").split() if v != "none"),
        load_rates=parse_rates(load_rates), load_seconds=load_seconds)
    report = run_all(preset, variants.split(), settings, budget, Path(out) if out else None)
    out_dir = Path(report["plots"][0]).parent
    click.echo((out_dir / "report.md").read_text())
    click.echo(f"wrote {out_dir / 'report.md'} and report.json ({report['seconds']:.0f} s)")
    if report["budget"] and report["budget"]["violations"]:
        click.echo(f"budget {budget.path}: {len(report['budget']['violations'])} violation(s)")
        click.echo(format_violations(report["budget"]["violations"]))
        sys.exit(1)


@click.command("compare", epilog="Examples:\n\n\b\n  poolattn compare --preset tiny-mistral\n"
               "  poolattn compare runs/a/bench/quality.json runs/b/bench/quality.json\n"
               "  poolattn compare --preset smollm2-135m-study --unit shard --baseline m1 \\\n"
               "      --baseline untrained-eos --baseline untrained-mean \\\n"
               "      --baseline minilm-peer \\\n"
               "      --paper benchmarks/study/paper_directions.yaml --markdown study.md")
@click.argument("results", nargs=-1, type=click.Path())
@click.option("--preset", default=None, help="use runs/<preset>/bench/quality.json")
@click.option("--baseline", "baselines", multiple=True, default=("m1",), show_default=True,
              help="reference: a variant, a baseline run (untrained-mean) or a label; "
                   "repeat for one table each")
@click.option("--unit", type=click.Choice(["task", "shard"]), default="task", show_default=True,
              help="one pair per task, or per shard (results of bench quality --shards K)")
@click.option("--exclude-task", "exclude_tasks", multiple=True,
              default=("WordNetDefinitionRetrieval",), show_default=True,
              help="in-domain task(s) left out of the 'overall excl. in-domain' row and mean "
                   "(none: no such row)")
@click.option("--peer", default=None,
              help="label or run of the peer for the gap table (default: any result whose "
                   "role is peer, e.g. minilm-peer)")
@click.option("--paper", type=click.Path(), default=None,
              help="paper-directions YAML: also hold every delta against the paper's")
@click.option("--markdown", "markdown_out", type=click.Path(), default=None,
              help="with --paper: write scores, tests and agreement as Markdown here")
@click.option("--json", "json_out", type=click.Path(), default=None, help="write rows as JSON")
def compare_command(results, preset, baselines, unit, exclude_tasks, peer, paper, markdown_out,
                    json_out) -> None:
    """Paired Wilcoxon signed-rank test of each trained variant vs each baseline across tasks
    (or shards), per category, overall and overall without the in-domain task(s); mean scores;
    per-task gaps to the MiniLM peer."""
    from toolchain.atomic import write_text_atomic
    from toolchain.bench.against import against_markdown, compare_against
    from toolchain.bench.compare import load_quality
    from toolchain.bench.directions import load_directions, study_markdown
    from toolchain.errors import ToolchainError
    from toolchain.paths import runs_dir

    if bool(results) == bool(preset):
        raise ToolchainError("give RESULTS files or --preset, not both and not neither")
    if markdown_out and not paper:
        raise ToolchainError("--markdown writes the study record: give --paper too")
    directions = load_directions(paper) if paper else None  # fail fast on a bad file
    if directions is not None and directions.baseline not in baselines:
        raise ToolchainError(f"{paper}: the paper's baseline is {directions.baseline!r}, "
                             f"not among --baseline {', '.join(baselines)}")
    exclude_tasks = tuple(t for t in exclude_tasks if t != "none")
    paths = list(results) or [runs_dir() / preset / "bench" / "quality.json"]
    quality = load_quality(paths)
    rows = compare_against(quality, list(baselines), unit, exclude_tasks)  # fails fast too
    click.echo(against_markdown(quality, list(baselines), [unit], exclude_tasks, peer))
    _write_json(json_out, [row for per in rows.values() for row in per])
    if directions is None:  # with --paper the study record carries the same table
        from toolchain.bench.convergence import convergence_markdown, quality_convergence

        click.echo("\n" + convergence_markdown(quality_convergence(quality)))
    else:
        from toolchain.bench.directions import has_shard_scores

        where = ", ".join(os.path.relpath(p) for p in paths)  # a record should not name /home/...
        text = study_markdown(quality, directions, where, tuple(exclude_tasks))
        click.echo("\n" + text[text.index("## Against the paper"):])
        others = [b for b in baselines if b != directions.baseline]
        units = ["task"] + (["shard"] if has_shard_scores(quality) else [])
        text += "\n" + against_markdown(quality, others, units if others else [],
                                        exclude_tasks, peer)
        if markdown_out:
            write_text_atomic(Path(markdown_out), text)
            click.echo(f"wrote {markdown_out}")


COMMANDS = [bench_group, compare_command]

"""`poolattn serve ARTIFACT` (an artifact behind LitServe) and `poolattn bench load` (traffic
against it); docs/serve.md."""

from __future__ import annotations

import click

from toolchain.cli.bench import BUDGET_HELP, _budget_gate, bench_group


@click.command("serve", epilog="Examples:\n\n\b\n"
               "  poolattn serve runs/tiny-mistral/m5/onnx-fp32 --port 8000\n"
               "  poolattn serve runs/tiny-mistral/m5/onnx-int8 --threads 2 --max-wait-ms 2 \\\n"
               "      --prompt query='Given a question, retrieve passages that answer it'\n\n"
               "  curl -s 127.0.0.1:8000/v1/embeddings -d '{\"input\": [\"a text\"]}'\n"
               "  curl -s 127.0.0.1:8000/embed -d '{\"inputs\": \"a text\"}'")
@click.argument("artifact", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="127.0.0.1 (this machine only), 0.0.0.0 or ::")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", type=int, default=None, help="model intra-op threads (default: all)")
@click.option("--workers", default=1, show_default=True,
              help="model worker processes (each its own copy and threads)")
@click.option("--max-batch-requests", default=32, show_default=True,
              help="requests gathered into one engine batch")
@click.option("--max-wait-ms", default=5.0, show_default=True,
              help="how long a batch waits for more requests")
@click.option("--token-budget", default=4096, show_default=True,
              help="padded tokens per forward pass (rows x longest); groups texts by length")
@click.option("--max-rows", default=64, show_default=True, help="texts per forward pass")
@click.option("--max-texts", default=256, show_default=True, help="texts per request")
@click.option("--max-body-bytes", default=2_000_000, show_default=True)
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              help="seconds a request may wait before 504")
@click.option("--prompt", "prompts", multiple=True,
              help="NAME=INSTRUCTION for prompt_name (repeat); 'document' is built in")
@click.option("--log-level", default="warning", show_default=True)
def serve_command(artifact, host, port, threads, workers, max_batch_requests, max_wait_ms,
                  token_budget, max_rows, max_texts, max_body_bytes, timeout_s, prompts,
                  log_level) -> None:
    """Serve ARTIFACT (onnx-<profile> or merged directory) over OpenAI POST /v1/embeddings
    and TEI POST /embed, with dynamic batching grouped by length; GET /health (ready),
    /live, /metrics. SIGTERM or Ctrl+C stops it gracefully."""
    from toolchain.serve.engine import serve
    from toolchain.serve.settings import ServeSettings, parse_prompts

    settings = ServeSettings(artifact, host=host, port=port, threads=threads,
                             max_batch_requests=max_batch_requests, max_wait_ms=max_wait_ms,
                             token_budget=token_budget, max_rows=max_rows, max_texts=max_texts,
                             max_body_bytes=max_body_bytes, timeout_s=timeout_s,
                             workers=workers, prompts=parse_prompts(prompts))
    click.echo(f"serving {settings.artifact} on http://{host}:{port} (POST /v1/embeddings, "
               f"/embed; GET /health, /live, /metrics)", err=True)
    serve(settings, log_level)


@bench_group.command("load", epilog="Examples:\n\n\b\n"
                     "  poolattn bench load --artifact runs/tiny-mistral/m1/onnx-fp32 "
                     "--artifact runs/tiny-mistral/m5/onnx-fp32 --rates 10,20,40,80\n"
                     "  poolattn serve runs/tiny-mistral/m5/onnx-fp32 --port 8000 &\n"
                     "  poolattn bench load --url http://127.0.0.1:8000 --rates 5,10 "
                     "--texts my_texts.jsonl")
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(),
              help="serve this artifact on loopback for the run (repeat: one curve each)")
@click.option("--url", default=None, help="a running server instead of --artifact")
@click.option("--label", default="server", show_default=True, help="curve name with --url")
@click.option("--rates", default="5,10,20", show_default=True, help="offered requests/s, one "
              "level each")
@click.option("--max-requests", default=200, show_default=True, help="arrivals per level")
@click.option("--max-seconds", default=10.0, show_default=True, help="arrival window per level")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, help="per request")
@click.option("--texts", "texts_file", type=click.Path(), default=None,
              help="texts to send (JSONL with 'text', or one per line; default: the suite's)")
@click.option("--texts-per-request", default=1, show_default=True)
@click.option("--api", type=click.Choice(["openai", "tei"]), default="openai", show_default=True)
@click.option("--threads", type=int, default=None, help="server model threads (--artifact)")
@click.option("--check/--no-check", default=True, show_default=True,
              help="compare every response with Embedder.open's vectors (--artifact)")
@click.option("--saturation-seconds", default=0.0, show_default=True,
              help="> 0: closed-loop throughput vs the offline Embedder (--artifact)")
@click.option("--saturation-texts", default=8, show_default=True,
              help="texts per request of the saturation run")
@click.option("--p99-budget-ms", default=100.0, show_default=True,
              help="report the highest rate whose p99 stays within this")
@click.option("--seed", default=0, show_default=True)
@click.option("--budget", "budget_file", type=click.Path(), default=None, help=BUDGET_HELP)
@click.option("--out", type=click.Path(), default=None,
              help="directory for load.json, load.md, load_p99.png")
def load_command(artifacts, url, label, rates, max_requests, max_seconds, timeout_s,
                 texts_file, texts_per_request, api, threads, check, saturation_seconds,
                 saturation_texts, p99_budget_ms, seed, budget_file, out) -> None:
    """p50/p95/p99, errors and server batch sizes under open-loop Poisson load, one level per
    rate; per artifact the highest rate within a p99 budget and (with m1 beside) the head's
    added latency under load."""
    from toolchain.bench.load import LoadSettings, parse_rates, read_texts, suite_texts
    from toolchain.bench.load_report import load_markdown, write_load
    from toolchain.bench.load_runs import LoadRunSettings, run_load_all
    from toolchain.errors import ToolchainError

    if bool(artifacts) == bool(url):
        raise ToolchainError("give --artifact (one or more) or --url, not both and not neither")
    from toolchain.bench.budget import load_budget

    budget = load_budget(budget_file) if budget_file else None
    settings = LoadRunSettings(
        load=LoadSettings(parse_rates(rates), max_requests, max_seconds, timeout_s,
                          texts_per_request, api, seed),
        threads=threads, check_vectors=check, saturation_s=saturation_seconds,
        saturation_texts=saturation_texts)
    texts = read_texts(texts_file) if texts_file else suite_texts()
    result = run_load_all(list(artifacts), url, label, settings, texts, p99_budget_ms,
                          texts_file or "the suite (benchmarks/data/tasks)")
    click.echo(load_markdown(result))
    if out:
        for path in write_load(result, out):
            click.echo(f"wrote {path}")
    if budget is not None:
        _budget_gate(budget, load=result["curves"])


COMMANDS = [serve_command]  # `bench load` joins the bench group above

"""Benchmark stage: latency and cost split, quality, paired significance, budgets, report.

Library entry points (the CLI in toolchain/cli/bench.py is a thin layer over these):
``latency.time_runner``, ``split.cost_split``, ``split.analytic_table``,
``quality.evaluate_artifacts``, ``compare.compare_models``, ``budget.load_budget`` /
``check_budget``, ``report.write_report``, ``pipeline.run_latency`` / ``run_all``.
"""

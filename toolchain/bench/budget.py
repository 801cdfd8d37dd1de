"""Latency/quality budgets as data: a YAML file checked against a benchmark's results.

Sections (all optional)::

    latency:   {runtime: onnx|torch|any, profile: NAME|any, max_p95_ms: {BxT: ms}}
    head:      {max_added_ms: {BxT: ms}, max_added_pct: {BxT: percent}}   # over eos_last
    analytic:  {size: compact|paper, seq_len: N, max_head_pct: {shape-name: percent}}
    quality:   {min_score: {category: score}}    # mean main score per category, every model
    load:      {max_p99_ms: {RATE: ms}}         # p99 under Poisson load at RATE requests/s

``check_budget`` returns violation rows; the CLI prints them as a table and exits 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from toolchain.errors import ToolchainError
from toolchain.yamlfile import read_yaml_mapping

SCHEMA: dict[str, dict[str, type]] = {
    "latency": {"runtime": str, "profile": str, "max_p95_ms": dict},
    "head": {"max_added_ms": dict, "max_added_pct": dict},
    "analytic": {"size": str, "seq_len": int, "max_head_pct": dict},
    "quality": {"min_score": dict},
    "load": {"max_p99_ms": dict},
}


@dataclass
class Budget:
    """A parsed budget file. ``lines`` maps a dotted field path to its line in the file."""

    path: Path
    data: dict
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, dotted: str) -> str:
        line = self.lines.get(dotted)
        return f"{self.path}:{line}:{dotted}" if line else f"{self.path}:{dotted}"


def _node_lines(node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[dotted] = key.start_mark.line + 1
            _node_lines(value, dotted, out)


def load_budget(path: str | Path) -> Budget:
    """Read and validate a budget file.

    Raises:
        ToolchainError: missing file, invalid YAML, unknown section/field, or a non-numeric
            limit; the message names ``file:line:field``.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"{path}: budget file does not exist")
    data = read_yaml_mapping(path)
    node = yaml.compose(path.read_text())  # node positions: errors name the field's line
    budget = Budget(path, data)
    _node_lines(node, "", budget.lines)
    for section, body in data.items():
        if section not in SCHEMA:
            raise ToolchainError(f"{budget.where(section)}: unknown section; known: "
                                 f"{', '.join(SCHEMA)}")
        if not isinstance(body, dict):
            raise ToolchainError(f"{budget.where(section)}: expected a mapping")
        for name, value in body.items():
            dotted = f"{section}.{name}"
            kind = SCHEMA[section].get(name)
            if kind is None:
                raise ToolchainError(f"{budget.where(dotted)}: unknown field; known: "
                                     f"{', '.join(SCHEMA[section])}")
            if not isinstance(value, kind):
                raise ToolchainError(f"{budget.where(dotted)}: expected {kind.__name__}")
            if kind is dict:
                for key, limit in value.items():
                    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
                        raise ToolchainError(f"{budget.where(f'{dotted}.{key}')}: limit must be "
                                             f"a number, got {limit!r}")
    return budget


def _violation(check: str, subject: str, value: float, limit: float, unit: str,
               variant: str | None = None) -> dict:
    return {"check": check, "subject": subject, "value": value, "limit": limit, "unit": unit,
            "variant": variant}


def _check_latency(spec: dict, rows: list[dict]) -> list[dict]:
    runtime, profile = spec.get("runtime", "any"), spec.get("profile", "any")
    out = []
    for row in rows:
        limit = spec.get("max_p95_ms", {}).get(row["shape"])
        if limit is None or runtime not in ("any", row["runtime"]):
            continue
        if profile not in ("any", row.get("profile")):
            continue
        if row["p95_ms"] > limit:
            out.append(_violation("latency.max_p95_ms", f"{row['model']} @ {row['shape']}",
                                  row["p95_ms"], limit, "ms", row.get("variant")))
    return out


def _check_head(spec: dict, rows: list[dict]) -> list[dict]:
    out = []
    for key, unit in (("added_ms", "ms"), ("added_pct", "%")):
        for row in rows:
            limit = spec.get(f"max_{key}", {}).get(row["shape"])
            if limit is not None and row[key] > limit:
                out.append(_violation(f"head.max_{key}", f"{row['variant']} @ {row['shape']}",
                                      row[key], limit, unit, row["variant"]))
    return out


def _check_analytic(spec: dict, variants: list) -> list[dict]:
    from toolchain.bench.split import analytic_table

    limits = spec.get("max_head_pct", {})
    if not limits or not variants:
        return []
    rows = analytic_table(variants, shapes=list(limits), seq_lens=[spec.get("seq_len", 128)],
                          sizes=[spec.get("size", "compact")])
    return [_violation("analytic.max_head_pct",
                       f"{r['variant']} {r['size']} head @ {r['shape']} T={r['seq_len']}",
                       r["head_pct"], limits[r["shape"]], "% of backbone", r["variant"])
            for r in rows if r["head_pct"] > limits[r["shape"]]]


def _check_quality(spec: dict, quality: dict) -> list[dict]:
    out = []
    for model, entry in quality.items():
        by_category: dict[str, list[float]] = {}
        for row in entry["rows"]:
            by_category.setdefault(row["category"], []).append(float(row["score"]))
        for category, limit in spec.get("min_score", {}).items():
            scores = by_category.get(category)
            if not scores:
                continue
            mean = sum(scores) / len(scores)
            if not math.isfinite(mean) or mean < limit:  # NaN: a broken model, never a pass
                out.append(_violation("quality.min_score", f"{model} {category}", mean, limit,
                                      "score", entry.get("variant")))
    return out


def _check_load(spec: dict, curves: list[dict]) -> list[dict]:
    """A level at a budgeted rate fails on p99 over the limit, or on any request not answered
    correctly (an error, timeout or mismatch has no latency to hold)."""
    limits = {float(rate): ms for rate, ms in spec.get("max_p99_ms", {}).items()}
    out = []
    for curve in curves:
        for level in curve["levels"]:
            limit = limits.get(float(level["offered_rps"]))
            if limit is None:
                continue
            subject = f"{curve['model']} @ {level['offered_rps']:g} req/s"
            if level["ok"] < level["sent"]:
                out.append(_violation("load.answered", subject, level["ok"], level["sent"],
                                      "requests answered correctly", curve.get("variant")))
            elif level["p99_ms"] > limit:
                out.append(_violation("load.max_p99_ms", subject, level["p99_ms"], limit, "ms",
                                      curve.get("variant")))
    return out


def check_budget(budget: Budget, latency: list[dict] | None = None,
                 split: list[dict] | None = None, quality: dict | None = None,
                 variants: list | None = None, load: list[dict] | None = None) -> list[dict]:
    """Every violated limit as a row {check, subject, value, limit, unit}; [] when within budget.

    Args:
        latency: rows from ``time_runner``; split: rows from ``cost_split``;
        quality: ``{model: {"rows": [...]}}`` from ``bench quality``;
        variants: Variant objects for the analytic check;
        load: curves from ``toolchain.bench.load_runs.load_artifact``.
    """
    data = budget.data
    return (_check_latency(data.get("latency", {}), latency or [])
            + _check_head(data.get("head", {}), split or [])
            + _check_analytic(data.get("analytic", {}), variants or [])
            + _check_quality(data.get("quality", {}), quality or {})
            + _check_load(data.get("load", {}), load or []))


def format_violations(violations: list[dict]) -> str:
    """A plain-text table (also valid Markdown) of violations."""
    lines = ["| check | subject | value | limit | unit |", "|---|---|---|---|---|"]
    lines += [f"| {v['check']} | {v['subject']} | {v['value']:.4g} | {v['limit']:.4g} | "
              f"{v['unit']} |" for v in violations]
    return "\n".join(lines)

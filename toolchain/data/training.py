"""Training data contract: JSONL rows {"query", "positive", "negatives": [...], "instruction"?}.

Validation names file:line:field for every malformed row and stops before any training starts.
Instructions are applied to queries only, identically in training and evaluation
(``format_query``); documents are always raw.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import ToolchainError

INSTRUCTION_TEMPLATE = "Instruct: {instruction}\nQuery: {query}"


@dataclass(frozen=True)
class TrainingRow:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str | None = None

    def formatted_query(self) -> str:
        return format_query(self.query, self.instruction)


def format_query(query: str, instruction: str | None) -> str:
    """The one place a query gets its instruction (training and evaluation both call this)."""
    return INSTRUCTION_TEMPLATE.format(instruction=instruction, query=query) if instruction else query


@dataclass
class DataSummary:
    rows: int = 0
    duplicate_rows: int = 0
    negatives: int = 0
    rows_without_negatives: int = 0
    with_instruction: int = 0
    errors: list[str] = field(default_factory=list)


def _row_errors(obj, where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: row must be a JSON object, got {type(obj).__name__}"]
    errors = []
    for key in ("query", "positive"):
        if key not in obj:
            errors.append(f"{where}: field '{key}': missing")
        elif not isinstance(obj[key], str):
            errors.append(f"{where}: field '{key}': must be a string, got {type(obj[key]).__name__}")
        elif not obj[key].strip():
            errors.append(f"{where}: field '{key}': empty")
    negatives = obj.get("negatives", [])
    if not isinstance(negatives, list):
        errors.append(f"{where}: field 'negatives': must be a list of strings")
    else:
        for i, neg in enumerate(negatives):
            if not isinstance(neg, str) or not neg.strip():
                errors.append(f"{where}: field 'negatives[{i}]': must be a non-empty string")
    instruction = obj.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        errors.append(f"{where}: field 'instruction': must be a non-empty string when present")
    unknown = set(obj) - {"query", "positive", "negatives", "instruction"}
    if unknown:
        errors.append(f"{where}: unknown field(s) {sorted(unknown)}")
    return errors


def read_training_file(path: Path | str, limit: int | None = None,
                       max_errors: int | None = 50) -> tuple[list[TrainingRow], DataSummary]:
    """Parse and validate a JSONL training file.

    Args:
        path: the .jsonl file.
        limit: keep only the first ``limit`` valid rows (small-subset mode).
        max_errors: how many problems the error message lists (None: all of them).

    Raises:
        ToolchainError: listing every malformed row as file:line: field: problem (first
            ``max_errors``).
    """
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"{path}: training data file does not exist")
    summary, rows, seen = DataSummary(), [], Counter()
    raw = path.read_bytes()
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            summary.errors.append(f"{where}: not valid UTF-8 (byte {err.start})")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            summary.errors.append(f"{where}: bad JSON: {err.msg} (column {err.colno})")
            continue
        errors = _row_errors(obj, where)
        if errors:
            summary.errors.extend(errors)
            continue
        row = TrainingRow(obj["query"], obj["positive"], tuple(obj.get("negatives", [])),
                          obj.get("instruction"))
        if limit is None or len(rows) < limit:
            rows.append(row)
        seen[(row.query, row.positive)] += 1
    if summary.errors:
        shown = summary.errors if max_errors is None else summary.errors[:max_errors]
        hidden = len(summary.errors) - len(shown)
        more = f"\n... and {hidden} more" if hidden else ""
        raise ToolchainError(f"{path}: {len(summary.errors)} malformed row problem(s):\n"
                             + "\n".join(shown) + more)
    if not rows:
        raise ToolchainError(f"{path}: no training rows")
    summary.rows = len(rows)
    summary.duplicate_rows = sum(c - 1 for c in seen.values())
    summary.negatives = sum(len(r.negatives) for r in rows)
    summary.rows_without_negatives = sum(1 for r in rows if not r.negatives)
    summary.with_instruction = sum(1 for r in rows if r.instruction)
    return rows, summary

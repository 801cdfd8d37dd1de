"""Training-row contract: every kind of malformed row is named file:line:field; nothing is written."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.data import wordnet
from toolchain.data.build import TRAIN_FILE, default_data_dir
from toolchain.data.training import format_query, read_training_file
from toolchain.errors import ToolchainError

GOOD = {"query": "bank: we sat on the bank", "positive": "sloping land beside water",
        "negatives": ["a financial institution"]}

BAD_ROWS = [  # (raw line, expected message after "file:line: ")
    (b'{"query": "q", "positive": ', r"bad JSON"),
    (b'["query", "positive"]', r"row must be a JSON object"),
    (json.dumps({"positive": "p"}).encode(), r"field 'query': missing"),
    (json.dumps({"query": "q"}).encode(), r"field 'positive': missing"),
    (json.dumps({"query": "  ", "positive": "p"}).encode(), r"field 'query': empty"),
    (json.dumps({"query": "q", "positive": ""}).encode(), r"field 'positive': empty"),
    (json.dumps({"query": 3, "positive": "p"}).encode(), r"field 'query': must be a string, got int"),
    (json.dumps({"query": "q", "positive": ["p"]}).encode(), r"field 'positive': must be a string"),
    ('{"query": "caf\u00e9", "positive": "p"}'.encode("latin-1"), r"not valid UTF-8 \(byte 14\)"),
    (json.dumps({"query": "q", "positive": "p", "negatives": "n"}).encode(),
     r"field 'negatives': must be a list of strings"),
    (json.dumps({"query": "q", "positive": "p", "negatives": ["n", ""]}).encode(),
     r"field 'negatives\[1\]': must be a non-empty string"),
    (json.dumps({"query": "q", "positive": "p", "negatives": [7]}).encode(),
     r"field 'negatives\[0\]': must be a non-empty string"),
    (json.dumps({"query": "q", "positive": "p", "instruction": 5}).encode(),
     r"field 'instruction': must be a non-empty string"),
    (json.dumps({"query": "q", "positive": "p", "score": 1}).encode(), r"unknown field\(s\) \['score'\]"),
]


def _write(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("raw,message", BAD_ROWS, ids=[m.split(":")[0][:30] for _, m in BAD_ROWS])
def test_each_malformed_row_is_named_by_file_line_field(tmp_path, raw, message):
    # the bad row sits on line 3, between good rows, so the line number is really checked
    path = _write(tmp_path / "rows.jsonl", [json.dumps(GOOD).encode(), b"", raw,
                                            json.dumps(GOOD).encode()])
    with pytest.raises(ToolchainError, match=rf"rows\.jsonl:3: {message}"):
        read_training_file(path)


def test_every_error_is_reported_and_cli_writes_nothing(tmp_path, monkeypatch):
    bad_rows = BAD_ROWS * 5  # 70 problems: beyond the library's default cap of 50
    path = _write(tmp_path / "bad.jsonl", [raw for raw, _ in bad_rows])
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, ["data", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{len(bad_rows)} malformed row problem(s)" in result.output
    for lineno, (_, message) in enumerate(bad_rows, start=1):
        assert re.search(rf"bad\.jsonl:{lineno}: {message}", result.output), (lineno, message)
    assert "more" not in result.output
    assert sorted(tmp_path.rglob("*")) == before and not list(work.iterdir())


def test_library_caps_listed_errors_but_counts_all(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [b"{"] * 60)
    with pytest.raises(ToolchainError, match=r"60 malformed row problem\(s\)(.|\n)*and 10 more"):
        read_training_file(path)


def test_summary_counts_rows_duplicates_negatives(tmp_path):
    rows = [GOOD, GOOD, {"query": "x", "positive": "y", "instruction": "Find it"},
            {"query": "x", "positive": "z", "negatives": ["a", "b", "c"]}]
    path = _write(tmp_path / "ok.jsonl", [json.dumps(r).encode() for r in rows])
    parsed, summary = read_training_file(path)
    assert (summary.rows, summary.duplicate_rows, summary.negatives) == (4, 1, 5)
    assert (summary.rows_without_negatives, summary.with_instruction) == (1, 1)
    assert parsed[2].formatted_query() == "Instruct: Find it\nQuery: x"
    result = CliRunner().invoke(main, ["data", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "duplicate_rows          1" in result.output


def test_shipped_training_file_is_valid_and_instructed():
    rows, summary = read_training_file(default_data_dir() / TRAIN_FILE)
    assert 3000 <= summary.rows <= 5000 and summary.duplicate_rows == 0
    assert all(1 <= len(r.negatives) <= 3 for r in rows)
    assert all(r.positive not in r.negatives for r in rows)
    assert {r.instruction for r in rows} == {wordnet.INSTRUCTION}
    assert rows[0].formatted_query() == format_query(rows[0].query, wordnet.INSTRUCTION)

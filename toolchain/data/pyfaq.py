"""Python 3.11 FAQ (Debian ``python3.11-doc``) -> an out-of-domain FAQ-answer retrieval task.

Each FAQ entry is a section whose heading is the question (underlined with ``-``; a few are
phrased as a problem, "My class defines __del__ but it is not called ...") and whose text is
the answer. The query is the question, its one relevant document the answer: reST markup
stripped to plain text (code, doctest and directive blocks dropped, inline roles and links
reduced to their text) and cut to its first ``ANSWER_WORDS`` words. Distractors are opening
paragraphs of library reference sections (and, in a ``--limit`` build, the FAQ answers whose
questions were not drawn). No training source reads this package: the task is out of domain.
"""

from __future__ import annotations

import re

from toolchain.data.pairs import normalise
from toolchain.data.subsample import stable_order

INSTRUCTION = "Given a question about Python, retrieve the FAQ answer that answers it"
SOURCE = "python-doc"
SOURCES_DIR = "./usr/share/doc/python3.11/html/_sources/"
FAQ_DIR = SOURCES_DIR + "faq/"
LIBRARY_DIR = SOURCES_DIR + "library/"
LICENSE = "./usr/share/doc/python3.11-doc/copyright"
ANSWER_WORDS = 120  # ~160 tokens: about what the presets' max_length (128) reads, and more
MIN_ANSWER_WORDS = 8  # "Yes." plus a code block carries nothing to retrieve
MIN_DISTRACTOR_WORDS = 30

_UNDERLINE = re.compile(r"([=\-~^*\"+#'`])\1{2,}")
_ROLE = re.compile(r":(?:[\w-]+:)*([\w-]+):`([^`]*)`")
# Inline markup, unwrapped in this order to its first group (its text): links, references,
# literals, default roles, strong, emphasis, substitutions; footnote marks are dropped.
_UNWRAP = [re.compile(pattern) for pattern in (
    r"`([^`<]*?)\s*<[^>`]*>`__?", r"`([^`]+)`_{1,2}(?!\w)", r"``(.+?)``", r"`([^`]+)`",
    r"(?<![\w*])\*\*(?=\S)([^*]+?)(?<=\S)\*\*(?![\w*])",
    r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])")]
_FOOTNOTE = re.compile(r"\s*\[(?:#\w*|\d+)\]_")
_SUBSTITUTION = re.compile(r"\|(\w[\w ]*)\|")
_TABLE = re.compile(r"\+[-=+]+\+|=+(?: +=+)*|\|.*\|")
_BULLET = re.compile(r"^(?:[*+-]|#\.|\d+\.|\(\d+\))\s+")


def wanted(name: str) -> bool:
    """The package members the task needs: FAQ and library reST sources, the licence."""
    return name == LICENSE or (name.startswith((FAQ_DIR, LIBRARY_DIR))
                               and name.endswith(".rst.txt"))


def _role(match: re.Match) -> str:
    role, text = match.group(1), match.group(2)
    title = re.match(r"(.*?)\s*<[^>]*>$", text, re.S)
    if title:  # :ref:`title <target>`
        return title.group(1)
    if role in ("pep", "rfc"):
        return f"{role.upper()} {text}"
    text = text.lstrip("!")
    return text.lstrip("~").rsplit(".", 1)[-1] if text.startswith("~") else text


def inline(text: str) -> str:
    """reST inline markup -> its plain text (roles, links, literals, emphasis, escapes)."""
    text = _ROLE.sub(_role, text)
    for markup in _UNWRAP:
        text = markup.sub(lambda m: m.group(1), text)
    text = _FOOTNOTE.sub("", text)
    text = _SUBSTITUTION.sub(lambda m: m.group(1), text)
    text = text.replace("\\ ", "").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def plain_text(lines: list[str]) -> str:
    """A section body as one line of prose: literal, doctest, directive and table blocks and
    comments are dropped, list markers removed, inline markup reduced to its text."""
    out: list[str] = []
    skip_deeper: int | None = None  # drop lines indented deeper than this (a block's body)
    in_doctest = False
    for line in lines:
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if not stripped:
            in_doctest = False
            continue
        if in_doctest or (skip_deeper is not None and indent > skip_deeper):
            continue
        skip_deeper = None
        if stripped.startswith(".. ") or stripped == "..":  # directive, comment, target
            skip_deeper = indent
        elif stripped.startswith(">>>"):
            in_doctest = True
        elif _TABLE.fullmatch(stripped) or _UNDERLINE.fullmatch(stripped):  # tables, transitions
            continue
        else:
            if stripped.endswith("::"):  # "text::" -> "text:", then an indented literal block
                skip_deeper = indent
                stripped = stripped[:-2].rstrip() + ("" if stripped[:-2].endswith(" ")
                                                     or stripped == "::" else ":")
            stripped = _BULLET.sub("", stripped)
            if stripped:
                out.append(stripped)
    return inline(" ".join(out))


def sections(text: str) -> list[tuple[str, str, list[str]]]:
    """(underline character, heading, body lines up to the next heading) of a reST file."""
    lines = text.splitlines()
    heads = []  # (index of the heading line, index where its body starts, char, heading)
    for i in range(len(lines) - 1):
        title, under = lines[i].strip(), lines[i + 1].rstrip()
        if (title and not lines[i][:1].isspace() and _UNDERLINE.fullmatch(under)
                and not _UNDERLINE.fullmatch(title) and len(under) >= len(title) - 2):
            overlined = i > 0 and lines[i - 1].rstrip() == under
            heads.append((i - 1 if overlined else i, i + 2, under[0], title))
    out = []
    for k, (_, body, char, title) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        out.append((char, title, lines[body:end]))
    return out


def clip_words(text: str, n: int) -> str:
    """The first ``n`` words of ``text``."""
    return " ".join(text.split()[:n])


def faq_entries(files: dict[str, bytes]) -> list[dict]:
    """Every FAQ entry with a usable answer: {"id", "question", "answer"}, in file order.

    An entry whose question or answer repeats an earlier one (normalised) is left out, so no
    two corpus documents tie.
    """
    entries, seen = [], set()
    for name, raw in files.items():
        if not name.startswith(FAQ_DIR):
            continue
        stem = name[len(FAQ_DIR):-len(".rst.txt")]
        for k, (char, title, body) in enumerate(sections(raw.decode("utf-8"))):
            question = inline(title)
            answer = clip_words(plain_text(body), ANSWER_WORDS)
            keys = (normalise(question), normalise(answer))
            if char != "-" or len(answer.split()) < MIN_ANSWER_WORDS or seen & set(keys):
                continue
            seen.update(keys)
            entries.append({"id": f"faq-{stem}-{k:03d}", "question": question, "answer": answer})
    return entries


def library_paragraphs(files: dict[str, bytes]) -> list[dict]:
    """Library reference sections as distractor documents: {"id", "text"} (first words of the
    section's prose), in file order; sections with less than ``MIN_DISTRACTOR_WORDS`` words of
    prose are left out."""
    out = []
    for name, raw in files.items():
        if not name.startswith(LIBRARY_DIR):
            continue
        stem = name[len(LIBRARY_DIR):-len(".rst.txt")]
        for k, (_, _, body) in enumerate(sections(raw.decode("utf-8"))):
            text = clip_words(plain_text(body), ANSWER_WORDS)
            if len(text.split()) >= MIN_DISTRACTOR_WORDS:
                out.append({"id": f"lib-{stem}-{k:03d}", "text": text})
    return out


def build_pyfaq(files: dict[str, bytes], n_queries: int, n_distractors: int
                ) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """The retrieval task and what was read.

    Args:
        files: the package members selected by :func:`wanted`.
        n_queries: at most this many questions (a fixed pseudo-random draw when fewer).
        n_distractors: documents added to the corpus besides the drawn questions' answers:
            the undrawn FAQ answers first, then library reference sections.

    Returns:
        ({"corpus", "queries", "qrels"}, {"faq_entries": ..., "library_sections": ...}).
    """
    entries = faq_entries(files)
    library = library_paragraphs(files)
    drawn = stable_order(entries, key=lambda e: e["id"], salt="pyfaq")[:n_queries]
    drawn_ids = {e["id"] for e in drawn}
    others = [{"id": e["id"], "text": e["answer"]} for e in entries if e["id"] not in drawn_ids]
    taken = {normalise(e["answer"]) for e in entries}
    fresh = []  # library sections, each text once and never an FAQ answer's
    for doc in stable_order(library, key=lambda d: d["id"], salt="pyfaq-lib"):
        if normalise(doc["text"]) not in taken:
            taken.add(normalise(doc["text"]))
            fresh.append(doc)
    distractors = (stable_order(others, key=lambda d: d["id"], salt="pyfaq-other")
                   + fresh)[:n_distractors]
    corpus = [{"id": e["id"], "text": e["answer"]} for e in drawn] + distractors
    task = {
        "corpus": sorted(corpus, key=lambda d: d["id"]),
        "queries": [{"id": f"q{k:04d}", "text": e["question"]} for k, e in enumerate(drawn)],
        "qrels": [{"query-id": f"q{k:04d}", "corpus-id": e["id"], "score": 1}
                  for k, e in enumerate(drawn)],
    }
    return task, {"faq_entries": len(entries), "library_sections": len(library)}

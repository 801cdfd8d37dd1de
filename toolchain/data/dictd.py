"""dictd databases (``.index`` + ``.dict.dz``) and their markup -> (term, definition) items.

A dictd index line is ``headword<TAB>offset<TAB>length`` with offset and length written in
dictd's base64 digits (``A``=0 ... ``/``=63, most significant first); they address bytes of
the uncompressed ``.dict`` text (``.dict.dz`` is gzip-readable). Several index lines may point
at one article (a headword with variants); articles are read once, by their first headword.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from dataclasses import dataclass

from toolchain.data.pairs import Entry
from toolchain.errors import ToolchainError

_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


@dataclass(frozen=True)
class Article:
    headword: str  # as the index spells it
    offset: int
    text: str


def b64_number(digits: str) -> int:
    """dictd's base64 number (``"Ba"`` -> 1 * 64 + 26)."""
    value = 0
    for ch in digits:
        if ch not in _B64:
            raise ValueError(f"not a dictd base64 digit: {ch!r}")
        value = value * 64 + _B64[ch]
    return value


def parse_index(text: str, where: str = "index") -> list[tuple[str, int, int]]:
    """(headword, offset, length) per index line, in file order.

    Raises:
        ToolchainError: a malformed line, named as ``where:line``.
    """
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        parts = line.split("\t")
        try:
            if len(parts) < 3:
                raise ValueError(f"expected 3 tab-separated fields, got {len(parts)}")
            out.append((parts[0], b64_number(parts[1]), b64_number(parts[2])))
        except ValueError as err:
            raise ToolchainError(f"{where}:{lineno}: {err}") from None
    return out


def read_articles(index: bytes, dict_dz: bytes, where: str = "index") -> list[Article]:
    """Every article once (first headword wins), in index order; database-info entries
    (``00-database-*``, ``00database*``) are skipped. Undecodable bytes become U+FFFD."""
    data = gzip.decompress(dict_dz) if dict_dz[:2] == b"\x1f\x8b" else dict_dz
    seen: set[int] = set()
    out = []
    for head, offset, length in parse_index(index.decode("utf-8"), where):
        if head.startswith("00") and "database" in head or offset in seen:
            continue
        if offset + length > len(data):
            raise ToolchainError(f"{where}: {head!r} points past the end of the .dict data")
        seen.add(offset)
        out.append(Article(head, offset, data[offset:offset + length].decode("utf-8", "replace")))
    return out


def words(text: str) -> int:
    return len(text.split())


def plain(text: str) -> str:
    """Cross-reference braces and ``<domain>`` tags removed, whitespace collapsed."""
    text = re.sub(r"[{}]", "", text)
    return re.sub(r"\s+", " ", text).strip()


# ---- GCIDE (dictd rendering of the 1913 Webster's markup) ----
_ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303",
            "=": "\u0304", ".": "\u0307", ",": "\u0327"}
_NAMED = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "deg": "°", "eth": "ð", "thorn": "þ",
          "ng": "ŋ", "imac": "ī", "sect": "§", "pounds": "£", "frac12": "½", "frac14": "¼",
          "frac34": "¾", "prime": "′", "bprime": "″", "times": "×", "divide": "÷", "root": "√"}
_CHAR = re.compile(r"\[(?:([\"'`^~=.,])([A-Za-z]{1,2})|([A-Za-z])\^|([A-Za-z]{2,6}))\]")
_SOURCE_TAG = re.compile(r"\[[^\[\]]*\]")
_CITATION = re.compile(r"\s--(?=[A-Z0-9])[^\n]*(?:\n {20,}\S[^\n]*)*")


def _char(m: re.Match) -> str:
    accent, base, breve, name = m.groups()
    if accent:
        return unicodedata.normalize("NFC", base + _ACCENTS[accent])
    if breve:
        return unicodedata.normalize("NFC", breve + "\u0306")
    return _NAMED.get(name, m.group(0))


def gcide_text(raw: str) -> str | None:
    """One GCIDE sense as plain text, or None when markup is left that we cannot render
    (unknown character codes glued to a word, ``?`` for lost Greek, undecodable bytes)."""
    text = _CITATION.sub("", raw)
    text = _CHAR.sub(_char, text)
    if "\ufffd" in text or re.search(r"\w\[[^\]\s]+\]|\[[^\]\s]+\]\w|\?\s*[,;)]|\s\?", text):
        return None
    text = plain(_SOURCE_TAG.sub("", text))
    text = re.sub(r"^\((?:[A-Z][\w. &]{1,30})\)\s*", "", text)  # domain label "(Mining)"
    text = re.sub(r"\s+([,;.])", r"\1", text).strip(" ;,")
    return text or None


_HEAD_REST = re.compile(r"^\s*(?:\([^()]*\))?\s*,?\s*(?:(?:[a-z]{1,5}\.|&)\s*)*")


def _strip_header(block: str) -> str:
    """The first block minus headwords, pronunciation, part of speech and etymology."""
    cut = block.rfind("\\")
    rest = _HEAD_REST.sub("", block[cut + 1:] if cut >= 0 else block)
    while rest.startswith("["):  # balanced etymology / inflection groups
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"[": 1, "]": -1}.get(ch, 0)
            if depth == 0:
                rest = rest[i + 1:].lstrip()
                break
        else:
            return ""
    return rest


def gcide_senses(article: str) -> list[str]:
    """Plain-text senses of one GCIDE article (empty for articles copied from WordNet).

    Numbered senses become one text each (sub-senses ``(a)``, ``(b)`` are cut off); an
    unnumbered definition after the header is one sense. Quotations, phrase entries
    (``{In banc}, ...``), notes and synonym lists are left out.
    """
    if "[WordNet" in article:
        return []
    blocks = [b for b in re.split(r"\n\s*\n", article) if b.strip()]
    if not blocks:
        return []
    candidates = [_strip_header(blocks[0])]
    for block in blocks[1:]:
        indent = len(block) - len(block.lstrip(" "))
        body = block.strip()
        if indent >= 8 or body.startswith(("{", "Note:", "Syn", "Usage:", "--")):
            continue
        candidates.append(body)
    senses = []
    for cand in candidates:
        cand = re.sub(r"^\d+\.\s*", "", cand.strip())
        cand = re.split(r"\n\s*\([a-z]\)\s|^\([a-z]\)\s", cand, maxsplit=1)[0]
        text = gcide_text(cand) if cand else None
        if text and not text.endswith(":") and text.count('"') % 2 == 0:
            senses.append(text)
    return senses


# ---- glossaries: the Jargon File, FOLDOC, The Devil's Dictionary ----
def glossary_definition(article: str, min_words: int = 25) -> str | None:
    """The opening of a glossary article as plain text: its first paragraphs (after the
    headword line, pronunciation / part-of-speech lines and ``[etymology]`` or ``<domain>``
    tags) until ``min_words`` words, stopping at the second numbered sense; "See also" lines,
    bare links and FOLDOC's ``(date)`` stamps are left out. The Devil's Dictionary's
    ``WORD, n.`` prefix is removed."""
    lines = article.split("\n")
    devil = re.match(r"^[A-Z][A-Z' -]*,", lines[0]) is not None
    body = article if devil else "\n".join(lines[1:])
    body = re.sub(r"^[A-Z][A-Z' -]*,\s*(?:[a-z]{1,4}\.\s*)+", "", body.lstrip()) if devil else body
    out: list[str] = []
    for para in re.split(r"\n\s*\n", body):
        text = plain(para)
        if re.fullmatch(r"(?:/[^/]*/)?[\s,]*(?:[a-z.]+[\s,]+)*[a-z.]*", text):
            continue  # pronunciation and part of speech only
        previous = None
        while previous != text:  # leading [etymology], <domain>, /pronunciation/, "1."
            previous = text
            text = re.sub(r"^(?:\[[^\]]*\]|<[^>]*>|/[^/\s][^/]*/|1\.\s)\s*", "", text)
        if text.startswith(","):
            return None  # variant spellings and pronunciations run into the text
        if (not text or re.fullmatch(r"\(\d{4}-\d\d-\d\d\)|\(?https?://\S+", text)
                or text.startswith(("See also", "Address:", "(http"))):
            continue
        if re.match(r"^\d+\.\s", text) and out:
            break  # the next numbered sense: keep the first only
        out.append(text)
        if words(" ".join(out)) >= min_words:
            break
    text = " ".join(out).strip()
    return text or None


# ---- entries for the training builder ----
def gcide_entries(articles: list[Article], held_out: set[str]) -> list[Entry]:
    """headword -> one sense, for articles that open with their headword (the index also
    files phrases under the article that mentions them) and headwords not in ``held_out``
    (casefolded). Negatives come from alphabetical neighbours, never the same headword."""
    out = []
    for art in articles:
        head = art.headword
        if head.casefold() in held_out or not art.text.casefold().startswith(head.casefold()):
            continue
        for i, sense in enumerate(gcide_senses(art.text)):
            out.append(Entry(f"{head}#{art.offset}#{i}", head, sense, "all",
                             (head.casefold(), art.offset, i), head.casefold()))
    return out


def glossary_entries(articles: list[Article], name: str, min_words: int) -> list[Entry]:
    """term -> definition opening; the term as the article spells it (the index lower-cases
    it), except The Devil's Dictionary's capitals. Negatives: alphabetical neighbours."""
    out = []
    for art in articles:
        first = art.text.split("\n", 1)[0].strip()
        term = first if first.casefold() == art.headword.casefold() else art.headword
        definition = glossary_definition(art.text, min_words)
        if definition:
            out.append(Entry(f"{name}:{art.headword}", term, definition, name,
                             (art.headword.casefold(),), art.headword.casefold()))
    return out

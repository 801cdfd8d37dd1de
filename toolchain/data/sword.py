"""SWORD zText Bible modules in pure Python, and KJV <-> WEB verse pairs.

A zText testament is three files: ``.bzs`` (one 12-byte record per zlib block: offset, size,
uncompressed size), ``.bzv`` (one 10-byte record per versification slot: block, start, size;
little-endian u32, u32, u16) and ``.bzz`` (the compressed blocks). Slots run book heading,
then per chapter a chapter heading and its verses; the OSIS text of a chapter heading holds
``<chapter osisID="Gen.1">`` and a book heading ``<div type="book" sID=...>``, so references
are read from the markup rather than from a versification table.
"""

from __future__ import annotations

import re
import struct
import zlib

from toolchain.data.pairs import Entry
from toolchain.errors import ToolchainError

_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([^"]+)"')
_BOOK = re.compile(r'<div\b(?=[^>]*\btype="book")(?=[^>]*\bsID=)[^>]*>')
_DROP = re.compile(r"<(title|note)\b[^>]*?(?<!/)>.*?</\1>", re.S)  # headings, footnotes


def read_slots(bzs: bytes, bzv: bytes, bzz: bytes, where: str = "zText") -> list[str]:
    """The raw text of every versification slot of one testament ("" for empty slots)."""
    if len(bzs) % 12 or len(bzv) % 10:
        raise ToolchainError(f"{where}: index sizes {len(bzs)}, {len(bzv)} are not multiples "
                             "of 12 (.bzs) and 10 (.bzv)")
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    cache: dict[int, bytes] = {}
    out = []
    for i in range(0, len(bzv), 10):
        block, start, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            out.append("")
            continue
        if block >= len(blocks):
            raise ToolchainError(f"{where}: slot {i // 10} points at block {block} of "
                                 f"{len(blocks)}")
        if block not in cache:
            offset, length, _ = blocks[block]
            cache[block] = zlib.decompress(bzz[offset:offset + length])
        out.append(cache[block][start:start + size].decode("utf-8", "replace"))
    return out


def verses(slots: list[str]) -> dict[str, str]:
    """{"Gen.1.1": raw OSIS text} for every verse slot after a chapter heading."""
    chapter, number, out = None, 0, {}
    for text in slots:
        found = _CHAPTER.search(text)
        if found:
            chapter, number = found.group(1), 0
        elif _BOOK.search(text):
            chapter = None  # the next book's heading; its chapters follow
        elif chapter is not None:
            number += 1
            out[f"{chapter}.{number}"] = text
    return out


def osis_text(raw: str) -> str:
    """Plain verse text: titles (psalm headings, acrostic letters) and notes dropped with
    their content, every other tag dropped keeping its text, pilcrows removed."""
    text = _DROP.sub(" ", raw)
    text = re.sub(r"<[^>]*>", "", text).replace("¶", " ")
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:!?’”)])", r"\1", text)


def bible_entries(kjv: dict[str, str], web: dict[str, str]) -> list[Entry]:
    """Both directions of every verse present in both texts (``finish_rows`` keeps one per
    verse); chapters whose verse counts differ (versification differences) are skipped.
    Negatives: neighbouring verses of the same chapter, in the positive's translation."""
    count = lambda d: {c: sum(1 for r in d if r.rsplit(".", 1)[0] == c) for c in
                       {r.rsplit(".", 1)[0] for r in d}}
    kc, wc = count(kjv), count(web)
    out = []
    for ref in sorted(set(kjv) & set(web)):
        chapter, number = ref.rsplit(".", 1)
        if kc[chapter] != wc.get(chapter):
            continue
        a, b = osis_text(kjv[ref]), osis_text(web[ref])
        if not a or not b or "\ufffd" in a + b:
            continue
        out.append(Entry(f"{ref}:kjv", a, b, f"{chapter}:kjv", (int(number),), ref))
        out.append(Entry(f"{ref}:web", b, a, f"{chapter}:web", (int(number),), ref))
    return out


def module_files(members: dict[str, bytes], module: str) -> list[tuple[bytes, bytes, bytes]]:
    """(.bzs, .bzv, .bzz) of the OT then NT of ``module`` (its folder name under ztext/)."""
    out = []
    for testament in ("ot", "nt"):
        names = [f"./usr/share/sword/modules/texts/ztext/{module}/{testament}.{ext}"
                 for ext in ("bzs", "bzv", "bzz")]
        missing = [n for n in names if n not in members]
        if missing:
            raise ToolchainError(f"SWORD module {module}: missing {missing}")
        out.append(tuple(members[n] for n in names))
    return out

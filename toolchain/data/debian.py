"""Debian package descriptions: short description -> long description (plain text).

Long descriptions are in the suite's ``Translation-en`` index (Package, Description-md5,
Description-en); ``Source`` and ``Section`` are in ``Packages``. The two join on
(Package, Description-md5). Description formatting (deb-control(5)): continuation lines start
with a space, a line " ." is a paragraph break, lines starting with two spaces are shown
verbatim (lists, code).
"""

from __future__ import annotations

import hashlib
import re

from toolchain.data.pairs import Entry
from toolchain.errors import ToolchainError

# short descriptions of packages that only point at others
_SKIP = re.compile(r"transitional|dummy package|debug(?:ging)? symbols|\bdbgsym\b", re.I)


def stanzas(text: str, where: str) -> list[tuple[int, dict[str, str]]]:
    """(first line number, {field: value}) per RFC 822 stanza; continuation lines keep their
    leading space in the value, joined with newlines.

    Raises:
        ToolchainError: a line that is neither ``Field: value`` nor a continuation,
            named as ``where:line``.
    """
    out: list[tuple[int, dict[str, str]]] = []
    fields: dict[str, str] = {}
    start, last = 1, None
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            if fields:
                out.append((start, fields))
            fields, last = {}, None
            continue
        if not fields:
            start = lineno
        if line[0] in " \t":
            if last is None:
                raise ToolchainError(f"{where}:{lineno}: continuation line outside a field")
            fields[last] += "\n" + line
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ToolchainError(f"{where}:{lineno}: expected 'Field: value', got {line[:60]!r}")
        last = name.strip()
        fields[last] = value.strip()
    if fields:
        out.append((start, fields))
    return out


def format_description(long: str) -> str:
    """deb-control long description -> plain text: paragraphs on their own lines, verbatim and
    bullet lines on their own lines, other lines joined with spaces."""
    paragraphs: list[list[str]] = [[]]
    for raw in long.split("\n"):
        if not raw.strip():
            continue
        body = raw[1:] if raw.startswith(" ") else raw
        if body.strip() == ".":
            paragraphs.append([])
            continue
        text = re.sub(r"\s+", " ", body).strip()
        verbatim = body.startswith(" ") or re.match(r"[-*+o]\s", text) is not None
        current = paragraphs[-1]
        if current and not verbatim:
            current[-1] += " " + text
        else:
            current.append(text)
    return "\n".join(line for para in paragraphs for line in para)


def _packages(text: str, where: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(package, description md5) -> (source package, section) from a Packages index."""
    out = {}
    for lineno, f in stanzas(text, where):
        for field in ("Package", "Description-md5"):
            if field not in f:
                raise ToolchainError(f"{where}:{lineno}: field '{field}': missing")
        source = f.get("Source", f["Package"]).split(" ", 1)[0]
        section = f.get("Section", "unknown").rsplit("/", 1)[-1]
        out[(f["Package"], f["Description-md5"])] = (source, section)
    return out


def debian_entries(translation: bytes, packages: bytes, where: tuple[str, str]) -> list[Entry]:
    """One entry per binary package found in both indexes; ``finish_rows`` keeps one per
    source package (``one_per_owner``) and drops long texts shared across sources.

    Hard-negative group: the package's Section; order within it: sha256 of the package name
    (a fixed shuffle, so a package's neighbours are unrelated packages of the same section).
    """
    index = _packages(packages.decode("utf-8"), where[1])
    out = []
    for lineno, f in stanzas(translation.decode("utf-8"), where[0]):
        if "Package" not in f or "Description-en" not in f:
            raise ToolchainError(f"{where[0]}:{lineno}: field 'Package' or 'Description-en': "
                                 "missing")
        key = (f["Package"], f.get("Description-md5", ""))
        if key not in index:
            continue  # a package of another architecture only
        short, _, long = f["Description-en"].partition("\n")
        short = short.strip()
        if not long.strip() or _SKIP.search(short):
            continue
        source, section = index[key]
        order = (hashlib.sha256(f["Package"].encode()).hexdigest(),)
        out.append(Entry(f["Package"], short, format_description(long), section, order, source))
    return out

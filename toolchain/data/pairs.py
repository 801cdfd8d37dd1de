"""Shared last step of every training source: (query, positive) entries -> contract rows.

Each parser yields ``Entry`` items; ``finish_rows`` filters them (length, evaluation texts),
keeps one entry per owner if asked, picks 1-3 hard negatives among the nearest entries of the
same group in the entry's ``order`` (skipping entries of the same owner), and draws a capped,
deterministic subsample with ``stable_order``. Nothing depends on ``random`` or ``hash()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolchain.data.subsample import stable_order

MIN_WORDS = 4  # positives shorter than this carry too little to retrieve
MAX_WORDS = 300  # longer ones are dropped, never cut
MAX_NEGATIVES = 3


@dataclass(frozen=True)
class Entry:
    """One candidate pair.

    Attributes:
        key: unique, stable id (subsampling and tie-breaking hash it).
        query: the query text.
        positive: the text the query should retrieve.
        group: hard negatives come from entries of the same group.
        order: position within the group; negatives are the nearest entries in this order.
        owner: entries of one owner are never each other's negatives (senses of one headword,
            packages of one source package, one verse).
    """

    key: str
    query: str
    positive: str
    group: str
    order: tuple
    owner: str


def normalise(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: the form used to compare texts."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def _usable(entry: Entry, banned: set[str]) -> bool:
    n = len(entry.positive.split())
    return (MIN_WORDS <= n <= MAX_WORDS and bool(entry.query.strip())
            and normalise(entry.query) != normalise(entry.positive)
            and normalise(entry.query) not in banned and normalise(entry.positive) not in banned)


def finish_rows(entries: list[Entry], cap: int | None, salt: str, banned: set[str],
                one_per_owner: bool = False) -> list[dict]:
    """Contract rows ``{"query", "positive", "negatives"}`` in a fixed pseudo-random order.

    Args:
        entries: candidates from a parser (any order).
        cap: keep at most this many rows (None: all).
        salt: the source name; seeds the deterministic order.
        banned: normalised texts that must not appear in any field (the evaluation suite).
        one_per_owner: keep one entry per owner (the first in a salted hash order).
    """
    pool = [e for e in stable_order(entries, key=lambda e: e.key, salt=salt + ":pick")
            if _usable(e, banned)]
    seen_positives: set[str] = set()
    seen_owners: set[str] = set()
    kept = []
    for e in pool:
        pos = normalise(e.positive)
        if pos in seen_positives or (one_per_owner and e.owner in seen_owners):
            continue  # shared boilerplate, or an owner already represented
        seen_positives.add(pos)
        seen_owners.add(e.owner)
        kept.append(e)
    groups: dict[str, list[Entry]] = {}
    for e in sorted(kept, key=lambda e: (e.group, e.order, e.key)):
        groups.setdefault(e.group, []).append(e)
    rows = []
    for e in stable_order(kept, key=lambda e: e.key, salt=salt):
        negatives = _negatives(e, groups[e.group])
        if negatives:
            rows.append({"query": e.query, "positive": e.positive, "negatives": negatives})
        if cap is not None and len(rows) >= cap:
            break
    return rows


def _negatives(entry: Entry, group: list[Entry]) -> list[str]:
    """Positives of the nearest entries in the group (alternating after/before), other owners
    only, none equal to the query or the positive."""
    at = _index(group, entry)
    taboo = {normalise(entry.positive), normalise(entry.query)}
    out: list[str] = []
    for step in range(1, len(group)):
        for j in (at + step, at - step):
            if 0 <= j < len(group) and group[j].owner != entry.owner:
                text = group[j].positive
                if normalise(text) not in taboo:
                    taboo.add(normalise(text))
                    out.append(text)
            if len(out) >= MAX_NEGATIVES:
                return out
        if step > 50:  # a long run of one owner: stop looking
            break
    return out


def _index(group: list[Entry], entry: Entry) -> int:
    lo, hi, target = 0, len(group), (entry.order, entry.key)
    while lo < hi:  # the group is sorted by (order, key)
        mid = (lo + hi) // 2
        if (group[mid].order, group[mid].key) < target:
            lo = mid + 1
        else:
            hi = mid
    return lo

"""Deterministic subsampling and text clipping: the same bytes on every machine and Python.

Order comes from sha256 of a stable key (never ``random`` or ``hash()``), so a rebuild picks
the same items whatever the platform, and adding a new item never reshuffles the others.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


def stable_order(items: Iterable[T], key: Callable[[T], str], salt: str = "") -> list[T]:
    """Items sorted by sha256(salt + key(item)): a fixed pseudo-random permutation."""
    return sorted(items, key=lambda it: hashlib.sha256((salt + key(it)).encode()).hexdigest())


def clip(text: str, max_chars: int) -> str:
    """Collapse whitespace and cut at a word boundary to at most ``max_chars`` characters."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[:cut.rfind(" ")] if " " in cut else cut


def balanced(items: list[T], label: Callable[[T], str], n: int) -> list[T]:
    """Up to ``n`` items, labels interleaved round-robin in sorted label order (input order kept
    within a label), so any prefix of the result is as balanced as the data allows."""
    by_label: dict[str, list[T]] = {}
    for it in items:
        by_label.setdefault(label(it), []).append(it)
    queues = [by_label[k] for k in sorted(by_label)]
    out: list[T] = []
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        out += [q[depth] for q in queues if depth < len(q)][: n - len(out)]
        depth += 1
    return out

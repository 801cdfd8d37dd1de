"""mteb task classes that read the shipped JSONL files instead of the hub.

One base class per category; tasks.py gives each offline task its TaskMetadata. ``limit`` keeps
the first N evaluation examples (files are already in a fixed pseudo-random order) with labels
kept balanced, so a small run still has every class.
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


class _FileTask:
    """Mixin: remembers where the task's files are and how many examples were loaded."""

    def __init__(self, task_dir: Path, limit: int | None = None, **kwargs) -> None:
        self.task_dir, self.limit, self.n_examples = Path(task_dir), limit, None
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        if self.data_loaded:
            return
        self.dataset = self._read()
        self.data_loaded = True


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
        self.n_examples = len(queries)
        split = {"corpus": Dataset.from_list([{"id": d["id"], "title": "", "text": d["text"]}
                                              for d in corpus]),
                 "queries": Dataset.from_list(queries), "relevant_docs": qrels, "top_ranked": None}
        return {"default": {"test": split}}


class FileSTS(_FileTask, AbsTaskSTS):
    """documents.jsonl {id, text} + test.jsonl {doc1, doc2, score in [0, 1]}."""

    mteb_type, mteb_category = "STS", "t2t"
    min_score, max_score = 0, 1

    def _read(self):
        from datasets import Dataset, DatasetDict

        docs = {d["id"]: d["text"] for d in read_jsonl(self.task_dir / "documents.jsonl")}
        pairs = read_jsonl(self.task_dir / "test.jsonl")[:self.limit]
        self.n_examples = len(pairs)
        return DatasetDict({"test": Dataset.from_dict({
            "sentence1": [docs[p["doc1"]] for p in pairs],
            "sentence2": [docs[p["doc2"]] for p in pairs],
            "score": [float(p["score"]) for p in pairs]})})


class FileClassification(_FileTask, AbsTaskClassification):
    """train.jsonl and test.jsonl of {id, text, label}; mteb's default logistic regression on
    8 examples per label, 10 experiments."""

    mteb_type, mteb_category = "Classification", "t2c"

    def _read(self):
        from datasets import Dataset, DatasetDict

        splits = {s: _by_label(read_jsonl(self.task_dir / f"{s}.jsonl"), "label", self.limit)
                  for s in ("train", "test")}
        self.n_examples = len(splits["test"])
        # integer ids in sorted-name order: mteb's binary metrics assume labels 0/1
        self.label_names = sorted({r["label"] for rows in splits.values() for r in rows})
        ids = {name: i for i, name in enumerate(self.label_names)}
        return DatasetDict({s: Dataset.from_dict({"text": [r["text"] for r in rows],
                                                  "label": [ids[r["label"]] for r in rows]})
                            for s, rows in splits.items()})

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
        self.n_examples = len(rows)
        self.max_documents_per_cluster = len(rows)  # each bootstrap sample is as big as the set
        return DatasetDict({"test": Dataset.from_dict({
            "sentences": [r["sentences"] for r in rows], "labels": [r["labels"] for r in rows]})})


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

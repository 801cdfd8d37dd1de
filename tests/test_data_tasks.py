"""The offline suite under mteb: every task runs, scores sit in range, a perfect encoder scores
perfectly, bag-of-words clearly beats random, instructions reach queries only."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.data.baselines import HashedBagOfWords, RandomEncoder
from toolchain.data.build import default_data_dir
from toolchain.data.tasks import TASKS, evaluate, list_tasks
from toolchain.data.training import format_query
from toolchain.errors import ToolchainError

RANGES = {"retrieval": (0, 1), "sts": (-1, 1), "classification": (0, 1), "clustering": (0, 1)}
MIN_EXAMPLES = {"PythonFAQRetrieval": 150}  # every FAQ question with an answer; others: 200
RETRIEVAL = [n for n, t in TASKS.items() if t.category == "retrieval"]
QUERY_MARK = re.compile(r"^Instruct: (.*)\nQuery: (.*)$", re.S)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Oracle:
    """Maps each raw text to a one-hot of its key (label, or the relevant document's id), and
    records which texts arrived with an instruction."""

    name = "oracle"

    def __init__(self, key_of: dict[str, str]) -> None:
        self.key_of, self.index = key_of, {k: i for i, k in enumerate(sorted(set(key_of.values())))}
        self.seen: list[tuple[str | None, str]] = []  # (instruction, raw text)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.index)))
        for i, text in enumerate(texts):
            match = QUERY_MARK.match(text)
            instruction, raw = (match.group(1), match.group(2)) if match else (None, text)
            self.seen.append((instruction, raw))
            out[i, self.index[self.key_of[raw]]] = 1.0
        return _unit(out)


def _read(task: str, split: str) -> list[dict]:
    path = default_data_dir() / "tasks" / task / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _oracle_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for info in list_tasks():
        if info.category == "classification":
            keys |= {r["text"]: f"{info.name}:{r['label']}" for s in ("train", "test")
                     for r in _read(info.name, s)}
        elif info.category == "clustering":
            keys |= {r["sentences"]: f"{info.name}:{r['labels']}" for r in _read(info.name, "test")}
        elif info.category == "retrieval":
            keys |= {d["text"]: f"{info.name}:{d['id']}" for d in _read(info.name, "corpus")}
            relevant = {r["query-id"]: r["corpus-id"] for r in _read(info.name, "qrels")}
            keys |= {q["text"]: f"{info.name}:{relevant[q['id']]}"
                     for q in _read(info.name, "queries")}
    return keys


@pytest.fixture(scope="module")
def bow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mteb")
    return evaluate(HashedBagOfWords(), output_dir=out), out


@pytest.fixture(scope="module")
def random_rows():
    return {r["task"]: r for r in evaluate(RandomEncoder())}


def test_every_task_runs_under_mteb_with_scores_in_range(bow_run):
    rows, out = bow_run
    assert [r["task"] for r in rows] == list(TASKS)
    for row, info in zip(rows, list_tasks()):
        assert (row["category"], row["main_score"]) == (info.category, info.main_score)
        low, high = RANGES[info.category]
        assert low <= row["score"] <= high and row["n"] >= MIN_EXAMPLES.get(row["task"], 200), row
        # mteb wrote its own result file with the same main score
        result = json.loads((out / "results" / "poolattn__bow-512" / "local" /
                             f"{row['task']}.json").read_text())
        assert result["scores"]["test"][0]["main_score"] == pytest.approx(row["score"], abs=1e-6)


@pytest.mark.parametrize("task,margin", [
    ("LeeDocumentSTS", 0.08), ("BBCNewsClassification", 0.25), ("BBCNewsClustering", 0.05),
    ("SpamAssassinClassification", 0.15), ("PythonFAQRetrieval", 0.1),
])  # WordNet definitions rarely share words with their terms: BoW is near random there (FAQ
# answers often repeat their question's words)
def test_bag_of_words_beats_random(bow_run, random_rows, task, margin):
    bow = {r["task"]: r["score"] for r in bow_run[0]}
    assert bow[task] > random_rows[task]["score"] + margin, (bow[task], random_rows[task])


def test_random_encoder_sits_at_chance(random_rows):
    assert abs(random_rows["LeeDocumentSTS"]["score"]) < 0.1
    assert random_rows["BBCNewsClassification"]["score"] < 0.35  # 5 balanced topics: 0.2
    assert abs(random_rows["RottenTomatoesClassification"]["score"] - 0.5) < 0.1
    assert random_rows["WordNetDefinitionRetrieval"]["score"] < 0.05
    assert random_rows["PythonFAQRetrieval"]["score"] < 0.06  # ~300 documents, one relevant


def test_oracle_scores_perfectly_and_instructions_reach_queries_only():
    oracle = Oracle(_oracle_keys())
    names = [n for n, t in TASKS.items() if t.category != "sts"]
    rows = evaluate(oracle, names, limit=40)
    for row in rows:
        assert row["score"] == pytest.approx(1.0, abs=1e-9), row
        assert 0 < row["n"] <= 40
    corpus = {d["text"] for name in RETRIEVAL for d in _read(name, "corpus")}
    task_of_query = {q["text"]: name for name in RETRIEVAL for q in _read(name, "queries")}
    for instruction, raw in oracle.seen:
        if raw in corpus:
            assert instruction is None  # documents stay raw
        else:  # retrieval queries and every input of the symmetric tasks
            assert instruction in {t.instruction for t in TASKS.values()}
            assert raw not in task_of_query or instruction == TASKS[task_of_query[raw]].instruction
    assert format_query("q", "do it") == "Instruct: do it\nQuery: q"


def test_real_mteb_task_without_hub_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ToolchainError, match=r"unreachable(.|\n)*offline suite(.|\n)*LeeDocumentSTS"):
        evaluate(RandomEncoder(), ["LeeDocumentSTS", "Banking77Classification"])
    with pytest.raises(ToolchainError, match="unknown task"):
        evaluate(RandomEncoder(), ["NoSuchTaskAnywhere"])


def test_missing_suite_files_say_how_to_rebuild(tmp_path):
    with pytest.raises(ToolchainError, match="poolattn data build"):
        evaluate(RandomEncoder(), ["LeeDocumentSTS"], data_dir=tmp_path)


def test_cli_lists_tasks_and_runs_an_untrained_tiny_model():
    runner = CliRunner()
    listed = runner.invoke(main, ["data", "tasks", "--json"])
    assert listed.exit_code == 0
    assert [t["name"] for t in json.loads(listed.output)] == list(TASKS)
    result = runner.invoke(main, ["data", "eval", "--preset", "tiny-mistral", "--variant", "m1",
                                  "--tasks", "LeeDocumentSTS,BBCNewsClustering", "--limit", "12",
                                  "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert [r["task"] for r in rows] == ["LeeDocumentSTS", "BBCNewsClustering"]
    assert all(r["n"] <= 12 and -1 <= r["score"] <= 1 for r in rows)


def test_adapters_keep_order_and_encode_each_unique_text_once():
    from toolchain.data.mteb_encoder import ModelTextEncoder, MtebEncoder

    class LengthModel:  # our own encode contract: row i describes text i
        calls: list[list[str]] = []

        def encode(self, texts, batch_size=32):
            self.calls.append(list(texts))
            return np.array([[len(t), 1.0] for t in texts])

    texts = ["ccc", "a", "bbbbbb", "a", "dd"]
    model = LengthModel()
    rows = ModelTextEncoder(model, "len").encode(texts)
    assert [r[0] for r in rows] == [len(t) for t in texts]
    wrapped = MtebEncoder(ModelTextEncoder(model, "len"), lambda meta: None)
    emb = wrapped.encode([{"text": texts[:3]}, {"text": texts[3:]}], task_metadata=None,
                         hf_split="test", hf_subset="default", prompt_type="document")
    assert model.calls[-1] == sorted(set(texts), key=len)  # unique texts, length-sorted batches
    assert wrapped.texts_encoded == 4
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(emb[1], emb[3])
    assert wrapped.mteb_model_meta.name == "poolattn/len"


def test_shards_partition_each_task_and_keep_the_whole_task_score(bow_run, tmp_path):
    from toolchain.data.task_loaders import shard_names
    from toolchain.data.tasks import resolve_tasks

    whole = {r["task"]: r for r in bow_run[0]}
    for task in resolve_tasks(shards=3):
        task.load_data()
        assert list(task.dataset) == shard_names(3) == ["default", "shard0", "shard1", "shard2"]
        splits = {s: task.dataset[s]["test"] for s in task.dataset}
        if "queries" in splits["default"]:  # retrieval: shards split the queries, not the corpus
            items = {s: list(d["queries"]["id"]) for s, d in splits.items()}
            assert all(len(d["corpus"]) == len(splits["default"]["corpus"]) for d in splits.values())
        else:
            column = next(c for c in ("sentences", "text", "sentence1") if c in splits["default"].column_names)
            extra = "sentence2" if column == "sentence1" else "label" if column == "text" else "labels"
            items = {s: list(zip(d[column], d[extra])) for s, d in splits.items()}
            if extra != "sentence2":  # every shard keeps the label mix (within one per label)
                mix = {s: Counter(d[extra]) for s, d in splits.items()}
                for label, total in mix["default"].items():
                    assert all(abs(mix[s][label] - total / 3) < 1 for s in shard_names(3)[1:])
        shards = [items[s] for s in shard_names(3)[1:]]
        assert sorted(x for part in shards for x in part) == sorted(items["default"])  # a partition
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    out = tmp_path / "mteb"
    rows = evaluate(HashedBagOfWords(), output_dir=out, shards=3)
    for row in rows:
        assert row["score"] == pytest.approx(whole[row["task"]]["score"], abs=1e-9)  # unchanged
        assert len(row["shard_scores"]) == 3 and len(set(row["shard_scores"])) == 3, row
        low, high = RANGES[row["category"]]
        assert all(low <= s <= high for s in row["shard_scores"])
    for retrieval in (r for r in rows if r["category"] == "retrieval"):  # nDCG: a per-query mean
        sizes = [len(range(i, retrieval["n"], 3)) for i in range(3)]  # shard i: every 3rd from i
        assert np.average(retrieval["shard_scores"], weights=sizes) == pytest.approx(
            retrieval["score"], abs=1e-4)
    result = json.loads((out / "results" / "poolattn__bow-512" / "local" /
                         "LeeDocumentSTS.json").read_text())
    assert sorted(s["hf_subset"] for s in result["scores"]["test"]) == shard_names(3)


def test_sharding_encodes_no_text_twice():
    from toolchain.data.mteb_encoder import MtebEncoder
    from toolchain.data.tasks import _instruction_for, resolve_tasks

    class Counting(HashedBagOfWords):
        def __init__(self):
            super().__init__()
            self.texts: list[str] = []

        def encode(self, texts):
            self.texts += texts
            return super().encode(texts)

    import mteb

    counts = []
    for shards in (1, 4):
        encoder = Counting()
        tasks = resolve_tasks(["BBCNewsClassification", "WordNetDefinitionRetrieval",
                               "PythonFAQRetrieval"], limit=40, shards=shards)
        mteb.evaluate(MtebEncoder(encoder, _instruction_for), tasks, cache=None,
                      show_progress_bar=False, encode_kwargs={"batch_size": 64})
        assert len(encoder.texts) == len(set(encoder.texts))
        counts.append(len(encoder.texts))
    assert counts[0] == counts[1]  # shards re-ask for the corpus / train split: served from cache


def test_bad_shard_counts_are_refused():
    with pytest.raises(ToolchainError, match="positive integer"):
        evaluate(RandomEncoder(), ["LeeDocumentSTS"], shards=0)
    with pytest.raises(ToolchainError, match="cannot make 5 shards"):
        evaluate(RandomEncoder(), ["LeeDocumentSTS"], limit=6, shards=5)


def test_python_faq_retrieval_loads_as_an_out_of_domain_task(bow_run, random_rows):
    from toolchain.data.tasks import resolve_tasks
    from toolchain.data.train_sources import REGISTRY

    info = TASKS["PythonFAQRetrieval"]
    assert (info.category, info.main_score) == ("retrieval", "ndcg_at_10")
    assert info.source == "python-doc"
    assert all("python-doc" not in s.packages for s in REGISTRY.values())  # out of domain
    (task,) = resolve_tasks(["PythonFAQRetrieval"])
    task.load_data()
    data = task.dataset["default"]["test"]
    corpus_ids = set(data["corpus"]["id"])
    assert 150 <= len(data["queries"]) <= 200 and len(data["corpus"]) > len(data["queries"])
    assert len(corpus_ids) == len(data["corpus"])
    assert set(data["relevant_docs"]) == set(data["queries"]["id"])
    for docs in data["relevant_docs"].values():  # one relevant answer per question
        assert len(docs) == 1 and set(docs) <= corpus_ids
    bow = next(r for r in bow_run[0] if r["task"] == "PythonFAQRetrieval")
    assert bow["n"] == len(data["queries"])
    assert bow["score"] > random_rows["PythonFAQRetrieval"]["score"] + 0.1

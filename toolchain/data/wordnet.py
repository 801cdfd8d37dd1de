"""WordNet 3.0 -> contrastive training rows and a definition-retrieval task on disjoint synsets.

Two kinds of query, both answered by a sense's definition (its gloss without the examples):
  * in context: ``"{lemma}: {example sentence}"`` for a polysemous lemma; hard negatives are the
    definitions of the lemma's other senses;
  * bare term: ``"{lemma}"`` for a monosemous lemma; hard negatives are definitions of co-hyponyms
    (other children of the same hypernym).
The evaluation queries are drawn first; every synset they touch (positive or negative) is then
banned from training, so no evaluation definition is ever seen in training.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from toolchain.data.subsample import stable_order

INSTRUCTION = ("Given a word, optionally followed by a sentence that uses it, retrieve the "
               "definition of that sense of the word")
_MAX_NEGATIVES = 3
_ADJ_MARKER = re.compile(r"\(\w+\)$")  # adjective position markers: "(a)", "(p)", "(ip)"


@dataclass(frozen=True)
class Synset:
    id: str  # "n00001740": pos letter + offset, unique across the four data files
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    hypernyms: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    """A query with its positive synset and hard-negative synsets (ids)."""

    key: str
    query: str
    positive: str
    negatives: tuple[str, ...]  # other senses (in context), else empty
    hypernyms: tuple[str, ...] = ()  # bare term: negatives are these synsets' other children


def _pos_letter(ss_type: str) -> str:
    return "a" if ss_type == "s" else ss_type  # adjective satellites share the adjective index


def _lemma(field: str) -> str:
    if field.endswith(")"):
        field = _ADJ_MARKER.sub("", field)
    return field.replace("_", " ")


def parse_data_file(text: str) -> list[Synset]:
    """Parse one WordNet ``data.*`` file (wndb(5WN) format); licence header lines are skipped."""
    synsets = []
    for line in text.splitlines():
        if not line or line.startswith("  "):
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        pos, n_words = _pos_letter(fields[2]), int(fields[3], 16)
        lemmas = tuple(_lemma(fields[4 + 2 * i]) for i in range(n_words))
        at = 4 + 2 * n_words
        n_ptrs = int(fields[at])
        ptrs = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(n_ptrs)]
        hypernyms = tuple(_pos_letter(p[2]) + p[1] for p in ptrs if p[0] in ("@", "@i"))
        examples = tuple(re.findall(r'"([^"]+)"', gloss))
        definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
        if definition:
            synsets.append(Synset(pos + fields[0], lemmas, definition, examples, hypernyms))
    return synsets


def _words(text: str) -> str:
    """Lower-cased words padded with spaces, so `" bank " in _words(s)` is a whole-word test."""
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def _children(synsets: dict[str, Synset]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = defaultdict(list)
    for s in synsets.values():
        for h in s.hypernyms:
            children[h].append(s.id)
    return children


def _candidates(synsets: dict[str, Synset]) -> list[Candidate]:
    senses: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in synsets.values():
        for lemma in s.lemmas:
            senses[(lemma.lower(), s.id[0])].append(s.id)
    out = []
    for s in synsets.values():
        example_words = [(e, _words(e)) for e in s.examples]
        for lemma in s.lemmas:
            others = [o for o in senses[(lemma.lower(), s.id[0])] if o != s.id]
            if others:
                word = _words(lemma)
                example = next((e for e, words in example_words if word in words), None)
                if example is not None:
                    out.append(Candidate(f"ctx:{s.id}:{lemma}", f"{lemma}: {example}", s.id,
                                         tuple(others)))
            elif len(lemma) > 2 and s.hypernyms:
                out.append(Candidate(f"term:{s.id}:{lemma}", lemma, s.id, (), s.hypernyms))
    return out


def _pick_negatives(cand: Candidate, banned: set[str], synsets: dict[str, Synset],
                    children: dict[str, list[str]]) -> list[str]:
    positive_def = synsets[cand.positive].definition
    pool = cand.negatives or sorted({c for h in cand.hypernyms for c in children[h]})
    allowed = [n for n in pool if n != cand.positive and n not in banned
               and synsets[n].definition != positive_def]
    return stable_order(allowed, key=lambda n: cand.key + n)[:_MAX_NEGATIVES]


def build_wordnet(synset_list: list[Synset], n_train: int, n_queries: int
                  ) -> tuple[list[dict], dict[str, list[dict]]]:
    """Draw evaluation queries, then training rows on synsets the evaluation never touches.

    Args:
        synset_list: every parsed synset.
        n_train: training rows to emit (half in-context, half bare-term where available).
        n_queries: evaluation queries (same mix).

    Returns:
        (training rows, {"corpus": [...], "queries": [...], "qrels": [...]}).
    """
    synsets = {s.id: s for s in synset_list}
    pools = defaultdict(list)
    for cand in stable_order(_candidates(synsets), key=lambda c: c.key):
        pools[cand.key.split(":", 1)[0]].append(cand)

    children = _children(synsets)
    test = _take(pools, n_queries, set(), synsets, children, one_per_synset=True)
    corpus_ids = sorted({s for cand, negs in test for s in (cand.positive, *negs)})
    # a few distinct synsets share a definition word for word: ban by text as well
    corpus_defs = {synsets[i].definition for i in corpus_ids}
    banned = {s.id for s in synsets.values() if s.definition in corpus_defs}
    train = _take(pools, n_train, banned, synsets, children, one_per_synset=False)

    rows = [{"query": c.query, "positive": synsets[c.positive].definition,
             "negatives": [synsets[n].definition for n in negs], "instruction": INSTRUCTION}
            for c, negs in train]
    # one corpus entry per distinct definition (a duplicate would tie with the relevant one);
    # a positive's id wins over a distractor's
    positives = {c.positive for c, _ in test}
    id_of: dict[str, str] = {}
    for i in sorted(corpus_ids, key=lambda i: (i not in positives, i)):
        id_of.setdefault(synsets[i].definition, i)
    task = {
        "corpus": [{"id": i, "text": d} for d, i in sorted(id_of.items(), key=lambda kv: kv[1])],
        "queries": [{"id": f"q{k:04d}", "text": c.query} for k, (c, _) in enumerate(test)],
        "qrels": [{"query-id": f"q{k:04d}", "corpus-id": id_of[synsets[c.positive].definition],
                   "score": 1} for k, (c, _) in enumerate(test)],
    }
    return rows, task


def _take(pools: dict[str, list[Candidate]], n: int, banned: set[str],
          synsets: dict[str, Synset], children: dict[str, list[str]], *, one_per_synset: bool
          ) -> list[tuple[Candidate, list[str]]]:
    """Alternate between the query kinds, skipping candidates that touch ``banned`` synsets."""
    iters = {kind: iter(pools[kind]) for kind in ("ctx", "term")}
    chosen, seen_pos, seen_queries = [], set(), set()
    while len(chosen) < n and iters:
        for kind in list(iters):
            for cand in iters[kind]:
                if cand.positive in banned or cand.query in seen_queries:
                    continue
                if one_per_synset and cand.positive in seen_pos:
                    continue
                negs = _pick_negatives(cand, banned, synsets, children)
                if negs:
                    chosen.append((cand, negs))
                    seen_pos.add(cand.positive)
                    seen_queries.add(cand.query)
                    break
            else:
                del iters[kind]
            if len(chosen) >= n:
                break
    return chosen

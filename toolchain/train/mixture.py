"""A training mixture: several sources, each batch drawn from ONE of them (E5/BGE practice).

In-batch negatives then come from the same domain, so the domain alone cannot solve the task.
Per source: a weight (its share of batches), a query instruction, and ``symmetric`` for
paraphrase sources (batches alternate direction: query -> positive, then positive -> query;
never both directions of a row in one batch, where a row's own query would be a candidate).

Preset schema (``train.mixture``, a list; it replaces ``train.data``)::

    mixture:
      - {name: debian, source: debian, weight: 3, instruction: "Given a ..., retrieve ..."}
      - {name: wordnet, data: benchmarks/data/train/wordnet_train.jsonl, weight: 1}
      - {name: bible, source: bible, weight: 1, symmetric: true, limit: 2000}

``source`` names a file built by ``poolattn data build-train`` (``<assets>/train-data/<source>.jsonl``);
``data`` is any JSONL file in the training contract, relative to the repository root.

The schedule is a smooth weighted round robin: exact shares, interleaved, no randomness, so the
batch of micro-step ``i`` stays a pure function of (sources, seed, i) and resume is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from toolchain.data.training import TrainingRow, read_training_file
from toolchain.errors import ToolchainError
from toolchain.paths import assets_dir, project_root

if TYPE_CHECKING:  # batches imports torch; configs and presets load without it
    from toolchain.train.batches import Batch

TRAIN_DATA_DIR = "train-data"  # under the asset cache: sources built at run time (licences)


@dataclass(frozen=True)
class MixtureSource:
    """One source of a training mixture.

    Attributes:
        name: label in logs and metrics (unique within the mixture).
        data: a training JSONL path (relative to the repository root), or None with ``source``.
        source: a built training source's name (``<assets>/train-data/<source>.jsonl``).
        weight: share of batches, relative to the other sources (> 0).
        instruction: prepended to this source's queries (``format_query``), None = raw.
        symmetric: train both directions (paraphrase sources).
        limit: use only the first N valid rows (None = all).
        dedupe: keep one row per distinct query and per distinct positive (a repeated query or
            positive in a batch is a false negative); a plain ``train.data`` file keeps all rows.
    """

    name: str
    data: str | None = None
    source: str | None = None
    weight: float = 1.0
    instruction: str | None = None
    symmetric: bool = False
    limit: int | None = None
    dedupe: bool = True

    def path(self) -> Path:
        """The JSONL file this source reads."""
        if self.source is not None:
            return assets_dir() / TRAIN_DATA_DIR / f"{self.source}.jsonl"
        path = Path(self.data)
        return path if path.is_absolute() else project_root() / path

    def to_dict(self) -> dict:
        return asdict(self)


def parse_mixture(items, where: str) -> list[MixtureSource]:
    """Validate ``train.mixture`` from a preset; errors name ``where[i].field``.

    Raises:
        ToolchainError: not a list of mappings, unknown or mistyped fields, neither or both of
            data/source, non-positive weight or limit, duplicate names.
    """
    if not isinstance(items, list) or not items:
        raise ToolchainError(f"{where}: must be a non-empty list of sources")
    known = {f.name for f in fields(MixtureSource)}
    out: list[MixtureSource] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, MixtureSource):
            item = item.to_dict()
        if not isinstance(item, dict):
            raise ToolchainError(f"{at}: must be a mapping, got {type(item).__name__}")
        unknown = sorted(set(item) - known)
        if unknown:
            raise ToolchainError(f"{at}: unknown key(s) {unknown}; known: {', '.join(sorted(known))}")
        _check_types(item, at)
        if (item.get("data") is None) == (item.get("source") is None):
            raise ToolchainError(f"{at}: give exactly one of 'data' (a JSONL path) or 'source' "
                                 f"(a built training source)")
        source = MixtureSource(**{**item, "weight": float(item.get("weight", 1.0))})
        if not source.weight > 0:
            raise ToolchainError(f"{at}.weight: must be > 0, got {source.weight}")
        if source.limit is not None and source.limit < 2:
            raise ToolchainError(f"{at}.limit: must be >= 2 or null, got {source.limit}")
        out.append(source)
    names = [s.name for s in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ToolchainError(f"{where}: duplicate source name(s) {duplicates}")
    return out


def _check_types(item: dict, at: str) -> None:
    expected = {"name": (str,), "data": (str, type(None)), "source": (str, type(None)),
                "weight": (int, float), "instruction": (str, type(None)), "symmetric": (bool,),
                "limit": (int, type(None)), "dedupe": (bool,)}
    if "name" not in item:
        raise ToolchainError(f"{at}.name: missing")
    for key, value in item.items():
        if not isinstance(value, expected[key]) or (key in ("weight", "limit")
                                                      and isinstance(value, bool)):
            raise ToolchainError(f"{at}.{key}: must be {' or '.join(t.__name__ for t in expected[key])}"
                                 f", got {value!r}")
        if isinstance(value, str) and not value.strip():
            raise ToolchainError(f"{at}.{key}: must not be empty")


def load_sources(sources: Sequence[MixtureSource]) -> list[tuple[MixtureSource, list[TrainingRow]]]:
    """Read, validate (file:line:field errors) and prepare every source's rows.

    Raises:
        ToolchainError: a missing file (built sources name the command that builds them) or
            malformed rows.
    """
    out = []
    for source in sources:
        path = source.path()
        if source.source is not None and not path.is_file():
            raise ToolchainError(f"training source {source.name}: {path} does not exist; build it "
                                 f"with `poolattn data build-train --sources {source.source}`")
        rows, _ = read_training_file(path, limit=source.limit)
        out.append((source, prepare_rows(source, rows)))
    return out


def prepare_rows(source: MixtureSource, rows: Sequence[TrainingRow]) -> list[TrainingRow]:
    """The source's instruction on rows that have none; with ``dedupe``, one row per distinct
    query and per distinct positive."""
    seen_queries, seen_positives, out = set(), set(), []
    for row in rows:
        if source.dedupe and (row.query in seen_queries or row.positive in seen_positives):
            continue
        seen_queries.add(row.query)
        seen_positives.add(row.positive)
        out.append(row if row.instruction or not source.instruction
                   else replace(row, instruction=source.instruction))
    return out


def reversed_rows(rows: Sequence[TrainingRow]) -> list[TrainingRow]:
    """positive -> query; hard negatives were chosen for the other side, so none are kept."""
    return [TrainingRow(r.positive, r.query, (), r.instruction) for r in rows]


def weighted_round_robin(weights: Sequence[float], count: int) -> list[int]:
    """Source index of each of ``count`` batches: smooth weighted round robin (exact shares,
    evenly interleaved, deterministic)."""
    total, current, order = float(sum(weights)), [0.0] * len(weights), []
    for _ in range(count):
        current = [c + w for c, w in zip(current, weights)]
        pick = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[pick] -= total
        order.append(pick)
    return order


class MixturePlan:
    """Which rows each rank trains on at each micro-step, one source per contrastive batch.

    Args:
        sources: (source, its prepared rows) pairs.
        batch_size, negatives_per_query, seed, rank, world_size: as for ``BatchPlan``.

    Raises:
        ToolchainError: a source with fewer rows than the batch (naming the source).
    """

    def __init__(self, sources: Sequence[tuple[MixtureSource, Sequence[TrainingRow]]],
                 batch_size: int, negatives_per_query: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        from toolchain.train.batches import BatchPlan

        self.sources = [s for s, _ in sources]
        self.plans: list[list[BatchPlan]] = []
        for i, (source, rows) in enumerate(sources):
            try:
                forward = [BatchPlan(rows, batch_size, negatives_per_query, seed + 7 * i, rank,
                                     world_size)]
                if source.symmetric:
                    forward.append(BatchPlan(reversed_rows(rows), batch_size, negatives_per_query,
                                             seed + 7 * i + 1, rank, world_size))
            except ToolchainError as err:
                raise ToolchainError(f"training source {source.name} ({source.path()}): {err}") from None
            self.plans.append(forward)
        self.local = batch_size // world_size
        self._weights = [s.weight for s in self.sources]
        self._positions = lru_cache(maxsize=1)(self._compute_positions)

    def _compute_positions(self, count: int) -> list[tuple[int, int]]:
        seen = [0] * len(self.sources)
        out = []
        for pick in weighted_round_robin(self._weights, count):
            out.append((pick, seen[pick]))
            seen[pick] += 1
        return out

    def position(self, micro_step: int) -> tuple[int, int]:
        """(source index, that source's own batch number) of ``micro_step``."""
        size = 256
        while size <= micro_step:
            size *= 2  # cache grows in powers of two: one computation per run
        return self._positions(size)[micro_step]

    def batch(self, micro_step: int) -> Batch:
        """This rank's share of the contrastive batch of ``micro_step``."""
        index, nth = self.position(micro_step)
        plans = self.plans[index]
        direction = plans[nth % len(plans)]
        return direction.batch(nth // len(plans))

    def source_name(self, micro_step: int) -> str:
        return self.sources[self.position(micro_step)[0]].name

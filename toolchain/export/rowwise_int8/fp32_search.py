"""The search for the groups that stay fp32 (``target_cosine``): on the calibration graph that
holds every group's paths behind a mask (toolchain.export.rowwise_int8.rewrite), the cheapest
choice of one path per group that keeps every calibration feed's embedding at the target cosine
to fp32."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

import numpy as np

from toolchain.export.rowwise_int8.rewrite import FALLBACK_MASK
from toolchain.export.rowwise_int8.statistics import in_memory_session


def calibration_embedder(model, feeds: list[dict]):
    """embed(mask) -> the calibration feeds' unit embeddings, (feeds, dim), from ``model`` (a
    graph rewritten with a fallback mask, consumed: :func:`in_memory_session`), run the way
    verify runs it."""
    from toolchain.export.onnx_export import OUTPUT_NAME

    session = in_memory_session(model, None)

    def embed(mask: np.ndarray) -> np.ndarray:
        rows = np.concatenate([session.run([OUTPUT_NAME], {**feed, FALLBACK_MASK: mask})[0]
                               for feed in feeds])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return embed


def path_masks(choice: np.ndarray, paths: int) -> np.ndarray:
    """The calibration graph's mask for one path per group (``choice``: a path index each)."""
    return np.eye(paths, dtype=np.float32)[choice]


def group_damage(min_cosine, count: int, paths: int) -> Callable[[int, int], float]:
    """damage(group, path): 1 - the worst cosine to fp32 with that group alone on that path and
    every other group fp32 (``min_cosine(choice)``), measured once, when first asked for; the
    fp32 path damages nothing."""
    measured: dict[tuple[int, int], float] = {}

    def damage(group: int, path: int) -> float:
        if path == paths - 1:
            return 0.0
        if (group, path) not in measured:
            alone = np.full(count, paths - 1)
            alone[group] = path
            measured[group, path] = 1 - min_cosine(alone)
        return measured[group, path]
    return damage


def upgrade_order(damage: Callable[[int, int], float], count: int,
                  paths: int) -> Iterator[tuple[int, int]]:
    """(group, path) moves, starting from every group on path 0: each move takes the group whose
    current path damages most to its next path that damages less (fp32 damages nothing). Lazy:
    a path's damage is asked for only when its group gets there."""
    current = np.zeros(count, int)
    heap = [(-damage(g, 0), g) for g in range(count) if damage(g, 0) > 0]
    heapq.heapify(heap)
    while heap:
        _, group = heapq.heappop(heap)
        here = current[group]
        current[group] = next(k for k in range(here + 1, paths)
                              if damage(group, k) < damage(group, here))
        yield group, int(current[group])
        if damage(group, current[group]) > 0:
            heapq.heappush(heap, (-damage(group, current[group]), group))


def after_moves(moves: list[tuple[int, int]], count: int) -> np.ndarray:
    """Each group's path after ``moves``, from path 0."""
    choice = np.zeros(count, int)
    for group, path in moves:
        choice[group] = path
    return choice


def shortest_meeting(min_cosine, moves: Iterator[tuple[int, int]], count: int,
                     target: float) -> tuple[np.ndarray, float]:
    """The shortest prefix of ``moves`` after which the worst cosine reaches ``target``
    (taking the cosine to grow with it): prefixes of 1, 2, 4, ... moves until one meets it,
    then bisection below that one, so that only the moves up to about twice the answer are
    drawn. Returns (choice, its worst cosine); all moves if none meets the target."""
    taken: list[tuple[int, int]] = []

    def drawn(length: int) -> int:  # moves drawn so far, at least ``length`` unless exhausted
        taken.extend(itertools.islice(moves, max(0, length - len(taken))))
        return len(taken)

    low, low_value, length = 0, None, 1  # the first ``low`` moves miss the target
    while True:
        length = min(length, drawn(length))
        if length == low:  # no moves left
            choice = after_moves(taken, count)
            return choice, low_value if low_value is not None else min_cosine(choice)
        reached = min_cosine(after_moves(taken[:length], count))
        if reached >= target:
            break
        low, low_value, length = length, reached, 2 * length
    high = length
    while high - low > 1:
        middle = (low + high) // 2
        value = min_cosine(after_moves(taken[:middle], count))
        if value >= target:
            high, reached = middle, value
        else:
            low = middle
    return after_moves(taken[:high], count), reached


def choose_paths(model, feeds: list[dict], count: int, paths: int, target: float) -> dict:
    """Each of the ``count`` groups' path (:func:`calibration_paths`, cheapest first) so that
    every calibration feed's embedding keeps cosine >= ``target`` to fp32: from every group on
    the cheapest int8 path, the moves of :func:`upgrade_order` (a group's damage on a path
    measured alone, when it gets there) up to the shortest prefix that meets the target.
    ``model`` carries the fallback mask (:func:`rewrite_rowwise_int8`); it is consumed."""
    embed = calibration_embedder(model, feeds)
    reference = embed(path_masks(np.full(count, paths - 1), paths))

    def min_cosine(choice: np.ndarray) -> float:
        return float(np.min(np.sum(embed(path_masks(choice, paths)) * reference, axis=1)))

    choice = np.zeros(count, int)
    reached = min_cosine(choice)
    calibrated = {"all_int8_min_cosine": reached}
    if reached < target:
        moves = upgrade_order(group_damage(min_cosine, count, paths), count, paths)
        choice, reached = shortest_meeting(min_cosine, moves, count, target)
    return {**calibrated, "min_cosine": reached, "paths": [int(k) for k in choice]}

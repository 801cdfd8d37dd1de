"""What the export probes share: the int8 export's calibration feeds and held-out rows for an
artifact, unit embeddings of a bare graph, and a graph runner whose idle threads sleep. Each
probe runs as a script (`.venv/bin/python benchmarks/export_probes/<probe>.py`), so Python puts
this folder on its path and ``import probe_common`` needs no sys.path edit."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def rowwise_parser(description: str) -> argparse.ArgumentParser:
    """The arguments the row-wise int8 probes share: an fp32 artifact and the rewrite's smoothing
    and outlier channels (the int8 profile's defaults)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("artifact", type=Path, help="an fp32 ONNX artifact")
    p.add_argument("--outliers", type=int, default=8)
    p.add_argument("--alpha", type=float, default=0.5)
    return p


def held_out_rows(max_length: int, vocab_size: int, count: int = 24) -> list[dict]:
    """Random-id rows like the calibration's (lengths geometric from 1 to max_length, jittered),
    from a seed neither the calibration nor verify uses."""
    rng = np.random.default_rng(777)
    rows = []
    for i in range(count):
        length = min(max_length, max(1, round(max_length ** (i / (count - 1)))
                                     + int(rng.integers(0, 3))))
        rows.append({"input_ids": rng.integers(3, vocab_size, (1, length), dtype=np.int64),
                     "attention_mask": np.ones((1, length), dtype=np.int64)})
    return rows


def calibration_sets(artifact: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """The export's calibration feeds for ``artifact``'s model, the same with the rows it reads
    only for statistics (GPTQ's X^T X), and the held-out rows."""
    from toolchain.atomic import read_manifest
    from toolchain.contract import source_model_dir
    from toolchain.export.calibration import read_calibration, write_calibration
    from toolchain.modeling.model import load_embedding_model

    reference = load_embedding_model(source_model_dir(artifact, read_manifest(artifact)))
    with tempfile.TemporaryDirectory() as scratch:
        write_calibration(Path(scratch), reference.tokenizer,
                          reference.backbone.config.vocab_size)
        feeds = read_calibration(Path(scratch))
        statistics = read_calibration(Path(scratch), statistics_rows=True)
    return feeds, statistics, held_out_rows(reference.tokenizer.max_length,
                                            reference.backbone.config.vocab_size)


def calibration_and_held_out(artifact: Path) -> tuple[list[dict], list[dict]]:
    """The export's calibration feeds for ``artifact``'s model, and the held-out rows."""
    feeds, _, held = calibration_sets(artifact)
    return feeds, held


def embeddings(graph: Path, rows: list[dict]) -> np.ndarray:
    """Unit embeddings of ``rows`` (one text a run) from graph/model.onnx, 2 threads."""
    from toolchain.ort_session import ort_session

    session = ort_session(graph / "model.onnx", None, "cpu", 2)[0]
    out = np.concatenate([session.run(None, row)[0] for row in rows])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class GraphRunner:
    """An ONNX graph on ORT's CPU provider with the artifacts' session settings, its pool's
    threads not spinning between runs; also bare graphs (verify refused them: speed only)."""

    def __init__(self, path: Path, threads: int) -> None:
        from toolchain.ort_session import ort_session

        self.session, _ = ort_session(path, None, "cpu", threads,
                                      config={"session.intra_op.allow_spinning": "0"})

    def run(self, input_ids, attention_mask):
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})

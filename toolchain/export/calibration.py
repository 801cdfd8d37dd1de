"""Calibration feeds for the transforms that calibrate: written once per export into its scratch
directory (CALIBRATION_FILE, plain arrays, no pickles), read by each transform that needs them."""

from __future__ import annotations

from pathlib import Path

from toolchain.errors import ToolchainError

CALIBRATION_FILE = "calibration.npz"


def write_calibration(directory: Path, tokenizer, vocab_size: int, random_rows: int = 16,
                      statistics_rows: int = 48) -> Path:
    """Calibration feeds, one text a batch, into an .npz: CALIBRATION_TEXTS as the model will see
    them, and ``random_rows`` texts of random token ids, so that fixed activation scales also
    hold inputs far from everyday prose (code, rare scripts, junk), where clipped outliers would
    otherwise cost the most. Their lengths spread geometrically from 1 token to max_length, as
    verify's random shapes run from 1 token (the rows were 8, of 8 to 64 tokens, until the int8
    profile's calibration was measured to generalise poorly: benchmarks/results/history/
    export_fusion_measurements.md, "the study's trained soups"). Then
    ``statistics_rows`` more random-id rows of uniform lengths, for statistics that need more
    tokens than the feeds a search runs over and over (the int8 profile's GPTQ rounding)."""
    import numpy as np

    from toolchain.probe_texts import CALIBRATION_TEXTS

    rows = [tokenizer([text]) for text in CALIBRATION_TEXTS]
    rows = [{k: v.numpy() for k, v in batch.items()} for batch in rows]
    rng = np.random.default_rng(2027)  # not verify's seeds: its random shapes stay unseen
    for i in range(random_rows + statistics_rows):
        length = (max(1, round(tokenizer.max_length ** (i / max(random_rows - 1, 1))))
                  if i < random_rows else int(rng.integers(1, tokenizer.max_length + 1)))
        rows.append({"input_ids": rng.integers(3, vocab_size, (1, length), dtype=np.int64),
                     "attention_mask": np.ones((1, length), dtype=np.int64)})
    arrays = {}
    for i, row in enumerate(rows):
        arrays[f"input_ids_{i}"] = row["input_ids"]
        arrays[f"attention_mask_{i}"] = row["attention_mask"]
    arrays["random_rows"] = np.array(random_rows)
    arrays["statistics_rows"] = np.array(statistics_rows)
    np.savez(directory / CALIBRATION_FILE, **arrays)
    return directory / CALIBRATION_FILE


def read_calibration(directory: Path, random_rows: bool = True,
                     statistics_rows: bool = False) -> list[dict]:
    """The feeds written by :func:`write_calibration` (no pickles: plain arrays): the texts,
    with or without its random-id rows, and with or without the rows kept for statistics."""
    import numpy as np

    path = directory / CALIBRATION_FILE
    if not path.is_file():
        raise ToolchainError(f"{path}: missing; static quantization calibrates on the texts the "
                             f"export writes there (poolattn export)")
    with np.load(path, allow_pickle=False) as data:
        total = len([k for k in data.files if k.startswith("input_ids_")])
        extra = int(data["statistics_rows"]) if "statistics_rows" in data.files else 0
        if not random_rows:
            count = total - int(data["random_rows"]) - extra  # the texts
        else:
            count = total if statistics_rows else total - extra
        return [{"input_ids": data[f"input_ids_{i}"],
                 "attention_mask": data[f"attention_mask_{i}"]} for i in range(count)]

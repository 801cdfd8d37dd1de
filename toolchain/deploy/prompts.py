"""The query prompts an artifact ships (config_sentence_transformers.json), by name.

A consumer prepends a prompt to a query, as training and evaluation do
(``toolchain.data.training.format_query``): the prompt is the instruction template up to
``{query}``. Documents are embedded raw (the ``document`` prompt is empty).

Named prompts: every task of the offline evaluation suite (``toolchain.data.tasks.TASKS``, by
task name) and every instruction the model was trained with (``train-<source>``: the preset's
mixture sources, and the instructions carried by the rows of its training files).
"""

from __future__ import annotations

import json
from pathlib import Path

from toolchain.data.training import INSTRUCTION_TEMPLATE
from toolchain.errors import ToolchainError

DOCUMENT_PROMPT = "document"


def prompt_of(instruction: str) -> str:
    """The prefix ``format_query`` puts before a query: ``prompt_of(i) + q == format_query(q, i)``."""
    head, marker, tail = INSTRUCTION_TEMPLATE.partition("{query}")
    if not marker or tail:
        raise ToolchainError(f"instruction template {INSTRUCTION_TEMPLATE!r} must end in {{query}}")
    return head.format(instruction=instruction)


def evaluation_instructions() -> dict[str, str]:
    """Task name -> the instruction its queries get in the offline suite."""
    from toolchain.data.tasks import TASKS

    return {name: task.instruction for name, task in TASKS.items()}


def training_instructions(preset_name: str | None) -> dict[str, str]:
    """``train-<source>`` -> instruction, from the preset's train section (mixture sources and
    the distinct instructions of each source's rows, when the file is on this machine)."""
    from toolchain.presets import load_preset
    from toolchain.train.mixture import parse_mixture

    if not preset_name:
        return {}
    train = load_preset(preset_name).sections.get("train") or {}
    if train.get("mixture"):
        sources = parse_mixture(train["mixture"], f"preset {preset_name}: train.mixture")
    else:
        from toolchain.train.config import DEFAULT_DATA
        from toolchain.train.mixture import MixtureSource

        sources = [MixtureSource(name="data", data=train.get("data") or DEFAULT_DATA)]
    found: dict[str, str] = {}
    for source in sources:
        texts = ([source.instruction] if source.instruction else []) + _row_instructions(source.path())
        for i, text in enumerate(dict.fromkeys(texts)):
            found[f"train-{source.name}" + (f"-{i}" if i else "")] = text
    return found


def _row_instructions(path: Path, limit: int = 100_000) -> list[str]:
    """Distinct ``instruction`` values of a training JSONL file (none if the file is absent)."""
    if not path.is_file():
        return []
    seen: dict[str, None] = {}
    with open(path) as handle:
        for number, line in enumerate(handle):
            if number >= limit:
                break
            value = json.loads(line).get("instruction") if line.strip() else None
            if isinstance(value, str) and value.strip():
                seen[value] = None
    return list(seen)


def artifact_prompts(preset_name: str | None) -> dict[str, str]:
    """Prompt name -> prefix for config_sentence_transformers.json (``document``: raw)."""
    named = {**evaluation_instructions(), **training_instructions(preset_name)}
    return {DOCUMENT_PROMPT: "", **{name: prompt_of(text) for name, text in named.items()}}

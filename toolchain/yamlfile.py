"""Reading the project's YAML data files (presets, export profiles, budgets) with clear errors."""

from __future__ import annotations

from pathlib import Path

import yaml

from toolchain.errors import ToolchainError


def read_yaml_mapping(path: Path) -> dict:
    """Parse ``path`` as YAML whose top level is a mapping.

    Raises:
        ToolchainError: invalid YAML (naming file and line) or a non-mapping top level.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ToolchainError(f"{path}{line}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ToolchainError(f"{path}: expected a mapping at top level")
    return data

"""The export probes (benchmarks/export_probes/) and the large-export run still start: each
script's --help imports everything it imports at module level (the library's public names, the
shared probe_common helper) and parses its arguments, without running a measurement. Nothing
else runs them, so without this they rot when the library moves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBES = sorted((ROOT / "benchmarks" / "export_probes").glob("*.py"))
SCRIPTS = [p for p in PROBES if p.name != "probe_common.py"] + [
    ROOT / "benchmarks" / "export_large" / "run.py"]


def test_every_probe_is_covered():
    """The list is the folder's: a new probe is checked without being named here."""
    assert len(SCRIPTS) >= 10
    assert (ROOT / "benchmarks" / "export_probes" / "probe_common.py") in PROBES


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_probe_help(script: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}  # the venv's toolchain only
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.lower().startswith("usage:"), result.stdout[:500]

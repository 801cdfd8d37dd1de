"""The export probes (benchmarks/export_probes/) and the large-export run still start: each
script runs as __main__ with --help, which imports everything it imports at module level (the
library's public names, the shared probe_common helper) and parses its arguments, without running
a measurement. Nothing else runs them, so without this they rot when the library moves. In this
process (runpy), so the library is imported once for all of them."""

from __future__ import annotations

import os
import runpy
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
def test_probe_help(script: Path, monkeypatch, capsys):
    # as `python <script>` would have it: the script's folder first on the path
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    environment = dict(os.environ)  # a probe may set its own defaults (grid.py: OMP_WAIT_POLICY)
    try:
        with pytest.raises(SystemExit) as exited:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        os.environ.clear()
        os.environ.update(environment)
    assert exited.value.code in (0, None)
    assert capsys.readouterr().out.lower().startswith("usage:")

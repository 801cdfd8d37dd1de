"""CPU-dependent behaviour is detected, never assumed: every CPU kind the project runs on is
forced through the detection, and the export says where an int8 graph does not pay."""

from __future__ import annotations

import pytest

import toolchain.cpu as cpu
from toolchain.export.pipeline import build_cpu_fields, int8_cpu_warning
from toolchain.export.profiles import load_profile

AVX2_ONLY = frozenset({"avx2", "fma"})
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
AMX = frozenset({"avx2", "avx512f", "amx_int8", "amx_bf16"})


@pytest.mark.parametrize("flags, int8_dot, bf16", [
    (AVX2_ONLY, False, False), (VNNI, True, True), (AMX, True, True),
    (frozenset({"avx2", "avx_vnni"}), True, False)])
def test_each_cpu_kind_is_detected(monkeypatch, flags, int8_dot, bf16):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    assert cpu.cpu_has_int8_dot() is int8_dot
    assert cpu.cpu_has_bf16() is bf16
    assert build_cpu_fields()["int8_dot"] is int8_dot
    assert build_cpu_fields()["flags"]["avx2"] is True


@pytest.mark.parametrize("profile", ["int8", "int8-dynamic", "fp32", "portable"])
@pytest.mark.parametrize("flags", [AVX2_ONLY, VNNI, AMX])
def test_int8_export_warns_only_where_int8_does_not_pay(monkeypatch, profile, flags):
    """An int8 profile exported on a CPU without VNNI/AMX says it runs no faster than fp32
    there; with the units, or for a float profile, nothing is said."""
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    warning = int8_cpu_warning(load_profile(profile))
    if "int8" in profile and flags == AVX2_ONLY:
        assert warning and "no VNNI/AMX" in warning and "fp32" in warning
    else:
        assert warning is None

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


@pytest.mark.parametrize("flags", [AVX2_ONLY, VNNI, AMX])
@pytest.mark.parametrize("reduce_range", [True, False])
def test_int8_activation_codes_follow_the_cpu(monkeypatch, flags, reduce_range):
    """`activation_qmax: auto` picks the widest codes the exporting CPU sums exactly: 127 with
    the shipped 7-bit weights on every CPU; with 8-bit weights 127 where VNNI/AMX exist and 64
    on AVX2 alone. The settings say whether the graph would saturate on an AVX2-only CPU."""
    from toolchain.export.rowwise_int8.settings import RowwiseSettings

    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    settings = RowwiseSettings.parse({"reduce_range": reduce_range}, "int8.yaml")
    assert settings.weight_qmax == (63 if reduce_range else 127)
    assert settings.activation_qmax == (64 if not reduce_range and flags == AVX2_ONLY else 127)
    assert settings.saturates_without_vnni is (not reduce_range and flags != AVX2_ONLY)
    assert RowwiseSettings.parse({"activation_qmax": 63}, "x").activation_qmax == 63


@pytest.mark.parametrize("bad", [0, 128, "wide", 1.5])
def test_bad_activation_qmax_names_the_file_and_field(bad):
    from toolchain.errors import ToolchainError
    from toolchain.export.rowwise_int8.settings import RowwiseSettings

    with pytest.raises(ToolchainError, match=r"int8\.yaml: quantize\.activation_qmax"):
        RowwiseSettings.parse({"activation_qmax": bad}, "int8.yaml")


def _latency_row(variant: str, profile: str, shape: str, p50_ms: float) -> dict:
    return {"variant": variant, "profile": profile, "shape": shape, "p50_ms": p50_ms}


@pytest.mark.parametrize("int8_dot", [True, False])
def test_runtime_advice_ships_int8_only_where_it_measured_faster(int8_dot):
    """The report's runtime advice follows the measured p50s, never the profile's name, and
    names the CPU's int8 units beside them."""
    from toolchain.bench.runtime_advice import runtime_advice

    slower = [_latency_row("m1", "onnx-fp32", "8x128", 10.0),
              _latency_row("m1", "onnx-int8", "8x128", 14.0),
              _latency_row("m1", "merged", "8x128", 12.0)]
    advice = runtime_advice(slower, int8_dot=int8_dot)
    assert advice.startswith("serve onnx-fp32") and "0.71-0.71x" in advice
    assert ("has no VNNI/AMX" in advice) is not int8_dot
    mixed = slower + [_latency_row("m3", "onnx-fp32", "8x128", 20.0),
                      _latency_row("m3", "onnx-int8", "8x128", 9.0)]
    assert runtime_advice(mixed, int8_dot).startswith("serve onnx-int8 for m3 only")
    assert runtime_advice(mixed[3:], int8_dot).startswith("serve onnx-int8: it ran 2.22-2.22x")
    assert runtime_advice(slower[:1], int8_dot) is None  # no int8 timed: nothing to advise

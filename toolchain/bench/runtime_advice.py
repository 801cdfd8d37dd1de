"""The report's runtime advice: ship the int8 graph only where it measured faster than fp32.
On CPUs without VNNI/AMX int8 units (toolchain/cpu.py) ONNX Runtime's u8 x s8 kernels are no
faster than fp32, so the advice reads the measured p50s and names the CPU's units beside them."""

from __future__ import annotations

from toolchain.cpu import cpu_has_int8_dot


def int8_speedups(latency: list[dict]) -> dict[str, list[float]]:
    """{variant: [fp32 p50 / int8 p50 per shape]} for variants with both ONNX artifacts timed."""
    p50 = {(r["variant"], r["profile"], r["shape"]): r["p50_ms"] for r in latency}
    out: dict[str, list[float]] = {}
    for (variant, profile, shape), int8 in p50.items():
        fp32 = p50.get((variant, "onnx-fp32", shape))
        if profile == "onnx-int8" and fp32 and int8:
            out.setdefault(variant, []).append(fp32 / int8)
    return out


def runtime_advice(latency: list[dict], int8_dot: bool | None = None) -> str | None:
    """One sentence: which ONNX graph to serve on this CPU, from the measured int8 / fp32 p50
    ratios (None when no variant has both). ``int8_dot``: forced, else detected."""
    speedups = int8_speedups(latency)
    if not speedups:
        return None
    int8_dot = cpu_has_int8_dot() if int8_dot is None else int8_dot
    units = ("has VNNI/AMX int8 units" if int8_dot else
             "has no VNNI/AMX int8 units (int8 pays only where they exist)")
    ratios = [x for values in speedups.values() for x in values]
    span = f"{min(ratios):.2f}-{max(ratios):.2f}x"
    faster = sorted(v for v, values in speedups.items() if min(values) > 1.0)
    if len(faster) == len(speedups):
        return f"serve onnx-int8: it ran {span} the fp32 graph's speed here; this CPU {units}."
    if faster:
        return (f"serve onnx-int8 for {', '.join(faster)} only, onnx-fp32 for the others: int8 "
                f"ran {span} fp32's speed across variants and shapes; this CPU {units}.")
    return (f"serve onnx-fp32: the int8 graph ran {span} fp32's speed here (slower); this CPU "
            f"{units}.")

"""What this CPU can do, detected (never assumed): machines of one kind differ in AVX-512, VNNI,
BF16 and AMX, and the training precision and every recorded figure depend on it."""

from __future__ import annotations

from functools import lru_cache

# /proc/cpuinfo flag names worth recording with a figure (AVX-512 VNNI/BF16, AMX, AVX2).
RECORDED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                  "amx_int8", "avx512_fp16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 dot products: bf16 training pays off


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first CPU's flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def recorded_flags() -> dict[str, bool]:
    """{flag: present} for the flags stored with every benchmark and training figure."""
    flags = cpu_flags()
    return {name: name in flags for name in RECORDED_FLAGS}


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


# Integer dot-product units: with one of these ONNX Runtime's u8 x s8 kernels accumulate in int32
# (VNNI vpdpbusd, AMX tiles); without them (AVX2 vpmaddubsw) each pair of products is summed in
# int16 first and saturates, and the int8 graph runs no faster than fp32.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
INT16_MAX = 32767


def cpu_has_int8_dot(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU has VNNI or AMX int8 units (``flags``: forced, else detected)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in INT8_DOT_FLAGS)


def int8_pairs_saturate(weight_qmax: int, activation_qmax: int,
                        flags: frozenset[str] | None = None) -> bool:
    """True where ORT's u8 x s8 MatMul can saturate on this CPU: no VNNI/AMX, and two products
    of the largest u8 code (``2 * activation_qmax + 1``, zero point ``activation_qmax + 1``) and
    the largest weight code can exceed int16."""
    largest_pair = 2 * (2 * activation_qmax + 1) * weight_qmax
    return not cpu_has_int8_dot(flags) and largest_pair > INT16_MAX


def exact_activation_qmax(weight_qmax: int, flags: frozenset[str] | None = None) -> int:
    """The largest activation code range (at most 127, the u8 limit) whose products with
    ``weight_qmax`` weights cannot saturate on this CPU: 127 with VNNI/AMX or 7-bit weights;
    64 with 8-bit weights on AVX2 alone."""
    qmax = 127
    while qmax > 1 and int8_pairs_saturate(weight_qmax, qmax, flags):
        qmax -= 1
    return qmax

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

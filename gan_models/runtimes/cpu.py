"""What this CPU can do: the instruction-set flags that decide which reduced-precision paths are worth offering.

bf16 is only fast where the CPU multiplies bf16 natively (AVX512_BF16 or AMX-BF16); elsewhere runtimes emulate it
and it is slower than fp32. int8 needs VNNI (AVX512_VNNI or AVX-VNNI) to beat fp32 by much. Which path actually wins
is measured per model, never assumed from these flags: they only say which candidates can run at all.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# The flags that change which runtime/precision can win, in the order they are printed.
RELEVANT_FLAGS: tuple[str, ...] = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16", "amx_fp16",
)
# torch's dispatch level, for systems without /proc/cpuinfo (macOS, Windows): a lower bound on the flags.
_CAPABILITY_FLAGS: dict[str, frozenset[str]] = {
    "AVX2": frozenset({"avx2"}),
    "AVX512": frozenset({"avx2", "avx512f"}),
}


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; ("", empty) where there is none."""
    model, flags = "", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:  # the x86 spelling; every core lists the same set
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


@functools.cache
def _torch_capability() -> str:
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        return "DEFAULT"


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags, lower case as Linux spells them ("avx2", "avx512_bf16", "amx_bf16", ...).

    From /proc/cpuinfo on Linux; elsewhere only what torch's dispatch level implies (so bf16/VNNI read as absent
    and those paths are not offered: a missed speed-up, never a slow path).
    """
    _, flags = _cpuinfo()
    return flags or _CAPABILITY_FLAGS.get(_torch_capability(), frozenset())


def has_bf16() -> bool:
    """Native bf16 matrix math (AVX512_BF16 or AMX-BF16): the condition for any bf16 path to be offered."""
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(cpu_flags())


def has_vnni() -> bool:
    """u8 x s8 dot-product instructions (AVX512_VNNI, AVX-VNNI or AMX-INT8), which make int8 convolutions fast."""
    return not {"avx512_vnni", "avx_vnni", "amx_int8"}.isdisjoint(cpu_flags())


def cpu_signature() -> str:
    """One line naming the CPU and its relevant flags, for cache keys and benchmark headers.

    Two machines with the same signature run the same kernels, so a speed measured on one holds on the other
    (up to clock and core count, which is why the logical CPU count is part of it).
    """
    model = _cpuinfo()[0] or platform.processor() or platform.machine() or "unknown CPU"
    flags = cpu_flags()
    have = " ".join(f for f in RELEVANT_FLAGS if f in flags) or "no AVX2/AVX-512/VNNI/AMX flags"
    return f"{model}, {os.cpu_count()} logical CPUs, {have}"

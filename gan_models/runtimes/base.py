"""What every runtime shares: the Backend protocol, the out-of-memory signal and the device choice.

A backend runs a network on a batch: numpy (N, C, H, W) float32 in, numpy float32 out. This is the only thing that
differs between runtimes; everything around it (padding, tiling, colour handling) lives in the Translator, so a
parity check of two backends checks exactly what users run. Backends hold no per-request state and are safe to call
from several threads at once.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..errors import GanModelsError


class BackendOutOfMemory(GanModelsError):
    """The accelerator ran out of memory on this input; the Translator retries with smaller tiles."""


class Backend(Protocol):
    name: str  # a key of RUNTIMES: "torch", "onnxruntime", ...
    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "fp16" | "int8" | "bf16"

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def resolve_device(device: str = "auto") -> str:
    """"auto" → "cuda" when a CUDA device is usable, else "cpu"; anything else is checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise GanModelsError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise GanModelsError("device 'cuda' was asked for but no CUDA device is available")
    return device

"""PyTorch with bf16 math on CPU: autocast(bfloat16) over a channels-last copy of the network.

Only offered on CPUs that multiply bf16 natively (AVX512_BF16 or AMX-BF16): oneDNN then runs the convolutions in
bf16 with fp32 accumulation; elsewhere bf16 is emulated and slower than fp32. Autocast keeps the weights fp32 and
casts per op, so normalisation layers and the output stay fp32 (InstanceNorm statistics in bf16 would cost PSNR).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

import gan_models.runtimes.cpu as cpu  # the module, not the package: no import cycle through __init__

from ..errors import BackendUnavailableError, first_line
from .base import BackendOutOfMemory

COMPILE_SIDE = 256


class TorchBf16Backend:
    """CPU autocast(bfloat16), channels-last, optionally torch.compile'd.

    Parameters:
        model: the generator (a private fp32 CPU copy is made, so the caller's module is untouched).
        threads: intra-op CPU threads; None keeps torch's setting (process-wide, as for TorchBackend).
        channels_last: run in NHWC, the layout oneDNN's bf16 convolutions use natively (no reorder per layer).
        compile: wrap the network in `torch.compile(dynamic=True)` and compile it in this constructor on a
            (1, C, 256, 256) input. For measurement only (python -m bench --paths torch-bf16-compile), not for
            serving: default-style took 33 s to compile and ran 1.7x faster than without, but a 200x300 input
            still recompiled for 17 s on its first call despite dynamic=True, i.e. on a request; OpenVINO bf16
            was faster still with no compile step.

    Thread-safe: the module is only read; autocast state is per thread.

    Raises:
        BackendUnavailableError: the CPU has no native bf16 (AVX512_BF16 or AMX-BF16).
    """

    name = "torch"
    device = "cpu"
    precision = "bf16"

    def __init__(
        self, model: nn.Module, *, threads: int | None = None, channels_last: bool = True, compile: bool = False
    ) -> None:
        if not cpu.has_bf16():
            raise BackendUnavailableError(
                "bf16 needs a CPU with AVX512_BF16 or AMX-BF16 (this one has neither: bf16 would be emulated, "
                "slower than fp32); use the torch or onnx backend in fp32/int8")
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        module = copy.deepcopy(model).float().cpu().eval().to(memory_format=self._memory_format)
        self.compiled = compile
        self._model: nn.Module = module
        if compile:
            self._model = torch.compile(module, dynamic=True)
            # The first call compiles (long): make it here, not on a request. 256² is a valid size for every
            # network we run (the deepest U-Net halves it 8 times).
            in_channels = next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels
            try:
                self(np.zeros((1, in_channels, COMPILE_SIDE, COMPILE_SIDE), dtype=np.float32))
            except Exception as exc:  # noqa: BLE001 - dynamo/inductor raise many types; the path is just not offered
                raise BackendUnavailableError(f"torch.compile failed: {first_line(exc)}") from exc

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # (N, C, H, W) float32 -> (N, C', H*s, W*s) float32
        # A copy, as in TorchBackend: networks that work on their input in place must not change the caller's.
        t = torch.from_numpy(np.array(x, dtype=np.float32)).contiguous(memory_format=self._memory_format)
        try:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                y = self._model(t)
        except torch.OutOfMemoryError as exc:
            raise BackendOutOfMemory(f"out of memory on cpu for input {tuple(x.shape)}") from exc
        return y.float().contiguous().numpy()

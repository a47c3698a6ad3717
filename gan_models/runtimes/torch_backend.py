"""Plain PyTorch: the reference every other runtime is judged against, and what a Translator starts on."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import GanModelsError
from .base import BackendOutOfMemory, resolve_device


class TorchBackend:
    """Plain PyTorch: eval mode, `inference_mode`, fp32 (or fp16 on CUDA only: fp16 on CPU is slow and lossy).

    Parameters:
        model: the generator (moved to `device`, switched to eval).
        device: "auto", "cpu" or "cuda".
        threads: intra-op CPU threads; None keeps torch's default. torch's setting is process-wide, so the
            app sets it once at start-up rather than per request.
        half: run in fp16 (CUDA only).
    """

    name = "torch"

    def __init__(
        self, model: nn.Module, *, device: str = "auto", threads: int | None = None, half: bool = False
    ) -> None:
        self.device = resolve_device(device)
        if half and self.device != "cuda":
            raise GanModelsError("fp16 (half) is only offered on CUDA; on CPU it is slower and loses precision")
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.precision = "fp16" if half else "fp32"
        self._dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, dtype=self._dtype).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # (N, C, H, W) float32 -> (N, C', H*s, W*s) float32
        try:
            with torch.inference_mode():
                # A copy (np.array copies): some networks work on their input in place (spandrel's RCAN scales it),
                # and `x` is the caller's array or a view of the neighbouring tiles' input.
                t = torch.from_numpy(np.array(x, dtype=np.float32)).to(self.device, dtype=self._dtype)
                y = self.model(t)
                return y.float().cpu().numpy()
        except torch.OutOfMemoryError as exc:
            if self.device == "cuda":
                torch.cuda.empty_cache()
            raise BackendOutOfMemory(f"out of memory on {self.device} for input {tuple(x.shape)}") from exc

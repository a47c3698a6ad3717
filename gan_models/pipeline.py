"""The one path from an image to a result, used by the app, the CLI, export parity checks and benchmarks.

    image ─imaging─▶ (1,3,H,W) in the model's range ─▶ pad to multiple ─▶ [tiles] ─▶ backend ─▶ stitch ─▶ crop
          ─imaging─▶ image (alpha, grayscale, 16-bit, ICC and EXIF restored; size exactly scale × input)

A Translator holds its spec and backend and nothing per request, so one instance serves concurrent requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image

from . import imaging
from .errors import GanModelsError
from .runtimes import (
    Backend,
    BackendOutOfMemory,
    TorchBackend,
    backend_for,
    prepare_in_background,
    requested_backend,
    resolve_device,
)
from .specs import ModelSpec, get_spec
from .tiling import auto_tile, run_tiled
from .weights import LoadedModel, WeightsSource, load_with_fallback

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
TileArg = int | None | Literal["auto"]
_MIN_TILE = 64
_MIN_SIDE = 32
# Working-memory budget for auto tiling on CPU; on CUDA the free device memory decides.
_CPU_TILE_BUDGET = int(os.environ.get("GAN_MODELS_TILE_BUDGET_MB", "1536")) * 2**20


class Translator:
    """Run one model on images of any size.

    Parameters:
        spec: what the model is (range, scale, size multiple, tiling advice).
        backend: runs the network on (N, C, H, W) float32 batches.
        source: where the weights came from (for info lines); None when unknown.
    """

    def __init__(self, spec: ModelSpec, backend: Backend, *, source: WeightsSource | None = None) -> None:
        self.spec = spec
        self.backend = backend
        self.source = source

    def __call__(
        self,
        image: Image.Image | str | Path | bytes | BinaryIO,
        *,
        tile: TileArg = "auto",
        outscale: float | None = None,
        progress: Progress | None = None,
        max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    ) -> Image.Image:
        """Translate or upscale `image`; the result is exactly `outscale` (default: the spec's scale) × its size.

        Alpha is upscaled separately for SR and passed through for translation; grayscale inputs come back
        grayscale, 16-bit grayscale comes back 16-bit.
        """
        img = imaging.load_image(image, max_pixels=max_pixels)
        rgb, alpha, meta = imaging.split_image(img)
        h, w = rgb.shape[:2]
        x = imaging.to_tensor_range(rgb, self.spec.value_range)  # (1, 3, H, W)
        # (1, 3, H*s, W*s) → (H*s, W*s, 3) in [0, 1]; the network's array is freed as soon as it is converted
        out = imaging.from_tensor_range(self.run_array(x, tile=tile, progress=progress), self.spec.value_range)
        scale = self.spec.scale if outscale is None else float(outscale)
        if scale <= 0:
            raise GanModelsError(f"outscale must be positive, not {outscale}")
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL order (W, H)
        if (out.shape[1], out.shape[0]) != size:
            out = _resize_rgb(out, size)
        if alpha is not None and (alpha.shape[1], alpha.shape[0]) != size:
            alpha = imaging.resize_alpha(alpha, size)
        return imaging.merge_image(out, alpha, meta)

    def run_array(self, x: np.ndarray, *, tile: TileArg = "auto", progress: Progress | None = None) -> np.ndarray:
        """(1, C, H, W) float32 in the model's range → (1, C', H*scale, W*scale); any H, W ≥ 1.

        Pads to the size multiple (reflection), tiles when asked or when auto decides the image is too large,
        and halves the tile on an out-of-memory error down to 64 px.
        """
        if x.ndim != 4 or x.shape[0] != 1:
            raise GanModelsError(f"expected a (1, C, H, W) array, got shape {x.shape}")
        h, w = x.shape[2:]
        s = self.spec.scale
        tile_size = self._choose_tile(h, w, tile)
        while True:
            try:
                if tile_size is None:
                    y = self.backend(self._pad_whole(x))
                    if progress is not None:
                        progress(1, 1)
                else:
                    y = run_tiled(self.backend, x, tile=tile_size, overlap=self._overlap(tile_size), scale=s,
                                  progress=progress)
                break
            except BackendOutOfMemory:
                current = tile_size or _round_down(max(h, w), self.spec.size_multiple)
                smaller = _round_down(current // 2, self.spec.size_multiple)
                if smaller < max(_MIN_TILE, self.spec.size_multiple):
                    raise
                tile_size = smaller
        return np.ascontiguousarray(y[:, :, : h * s, : w * s], dtype=np.float32)

    def _pad_whole(self, x: np.ndarray) -> np.ndarray:
        # Reflect-pad to the size multiple and to at least _MIN_SIDE: InstanceNorm needs more than one pixel
        # at the bottleneck, so a 1x1 or 70x5 input must not reach the network at that size.
        m = self.spec.size_multiple
        h, w = x.shape[2:]
        target_h = _round_up(max(h, _MIN_SIDE), m)
        target_w = _round_up(max(w, _MIN_SIDE), m)
        if (target_h, target_w) == (h, w):
            return x
        padded = np.pad(x, ((0, 0), (0, 0), (0, target_h - h), (0, target_w - w)), mode="reflect")
        return np.ascontiguousarray(padded, dtype=np.float32)

    def _overlap(self, tile_size: int) -> int:
        return min(self.spec.tile_overlap, max(0, (tile_size - 1) // 2 - 1))

    def _choose_tile(self, h: int, w: int, tile: TileArg) -> int | None:
        m = self.spec.size_multiple
        if tile is None or tile == 0:
            return None
        if tile == "auto":
            if self.spec.tile is None:
                return None  # InstanceNorm nets: whole image, as trained
            budget = _cuda_free_bytes() if self.backend.device == "cuda" else _CPU_TILE_BUDGET
            chosen = auto_tile(h, w, scale=self.spec.scale, budget_bytes=budget, multiple=m)
            if chosen is None:
                return None
            return min(chosen, self.spec.tile * 4)
        if not isinstance(tile, int) or tile < 0:
            raise GanModelsError(f"tile must be 'auto', None/0 or a positive integer, not {tile!r}")
        return max(_round_down(tile, m), _round_up(_MIN_TILE, m))


def _round_down(value: int, multiple: int) -> int:
    return (value // multiple) * multiple


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Per-channel float resize keeps full precision (16-bit inputs) and avoids 8-bit banding.
    planes = [np.asarray(Image.fromarray(rgb[..., c], mode="F").resize(size, Image.Resampling.LANCZOS))
              for c in range(rgb.shape[2])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def _cuda_free_bytes() -> int:
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(free * 0.5)


def translator_for(
    spec_or_id: ModelSpec | str,
    *,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    allow_fallback: bool = True,
    precision: str | None = None,
    background: bool = True,
) -> Translator:
    """Load a model and wrap it in a Translator: the one-call entry point for the CLI and the app.

    Parameters:
        backend: "auto" (the fastest runtime that keeps quality, picked by the tournament in
            `gan_models.runtimes`; torch when that fails, with a logged warning), or a runtime: "torch",
            "onnxruntime" (alias "onnx"), ... (errors are raised, not hidden).
        device: "auto", "cpu" or "cuda".
        threads: CPU threads for either backend (None: torch's setting).
        allow_fallback: a Hub model that cannot be downloaded is replaced by its bundled fallback, and
            `translator.source.note` says so.
        precision: with a runtime other than torch: None (its fastest that passes) or one it offers.
        background: with "auto": return at once on torch and switch `translator.backend` to the chosen runtime
            when a background worker has exported and timed it (a request already running keeps its backend).
            False chooses before returning (exports and times on first use of these weights).

    Raises:
        GanModelsError: unknown backend; BackendUnavailableError / OnnxExportError for a named runtime.
    """
    name = requested_backend(backend)
    spec = get_spec(spec_or_id) if isinstance(spec_or_id, str) else spec_or_id
    if allow_fallback:
        loaded = load_with_fallback(spec)
    else:
        from .weights import load_generator_with_source

        module, source = load_generator_with_source(spec)
        loaded = LoadedModel(spec=spec, module=module, source=source)
    if precision is not None and name == "torch" and precision != "fp32":
        raise GanModelsError(f"precision {precision!r} is for the onnx backend; the torch backend runs fp32")
    if name == "auto" and background:
        translator = Translator(loaded.spec, TorchBackend(loaded.module, device=resolve_device(device),
                                                          threads=threads), source=loaded.source)
        prepare_in_background(loaded, device=device, threads=threads,
                              on_ready=lambda chosen: setattr(translator, "backend", chosen))
        return translator
    runner = backend_for(loaded, name, device=device, threads=threads, precision=precision)
    return Translator(loaded.spec, runner, source=loaded.source)

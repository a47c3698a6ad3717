"""The one path from an image to a result, used by the app, the CLI and benchmarks (the runtimes' parity checks
and tournament run its array part, `tiling.run_array`).

    image ─imaging─▶ (1,3,H,W) in the model's range ─▶ pad to multiple ─▶ [tiles] ─▶ backend ─▶ stitch ─▶ crop
          ─imaging─▶ image (alpha, grayscale, 16-bit, ICC and EXIF restored; size exactly scale × input)

A Translator is immutable and holds nothing per request, so one instance serves concurrent requests; the backend
its next request runs on sits in a `BackendSlot` that a background switch swaps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image

from . import imaging
from .errors import GanModelsError
from .imaging import resize_rgb as _resize_rgb
from .runtimes import (
    Backend,
    BackendSlot,
    TorchBackend,
    backend_for,
    prepare_in_background,
    requested_backend,
    resolve_device,
)
from .settings import Settings
from .specs import ModelSpec, get_spec
from .tiling import auto_tile, requested_tile, run_array
from .weights import LoadedModel, WeightsSource, load_model

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
TileArg = int | None | Literal["auto"]


@dataclass(frozen=True, eq=False, init=False)
class Translator:
    """Run one model on images of any size.

    Parameters:
        spec: what the model is (range, scale, size multiple, tiling advice).
        backend: runs the network on (N, C, H, W) float32 batches; it goes in a new slot (give it or `slot`).
        source: where the weights came from (for info lines); None when unknown.
        fallback_reason: why this model stands in for the one asked for (`LoadedModel.fallback_reason`); None
            when it is the one asked for.
        tile_budget_mb: working memory for automatic tiling on CPU (`Settings.tile_budget_mb`); on CUDA the free
            device memory decides.
        slot: the backend the next request runs on; a background switch swaps it (`BackendSlot.swap`). Translators
            may share one (a fallback and the model it stands in for).

    Immutable: each call reads the slot once and runs on that backend to the end, so a switch only reaches the
    next call. `pinned()` gives a copy that keeps the current backend for a whole request of several calls.
    """

    spec: ModelSpec
    slot: BackendSlot
    source: WeightsSource | None
    fallback_reason: str | None
    tile_budget_mb: int

    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend | None = None,
        *,
        source: WeightsSource | None = None,
        fallback_reason: str | None = None,
        tile_budget_mb: int = Settings.tile_budget_mb,
        slot: BackendSlot | None = None,
    ) -> None:
        if (backend is None) == (slot is None):
            raise GanModelsError("a Translator needs a backend or a slot (one of the two)")
        fields = {"spec": spec, "slot": slot or BackendSlot(backend), "source": source,
                  "fallback_reason": fallback_reason, "tile_budget_mb": tile_budget_mb}
        for name, value in fields.items():
            object.__setattr__(self, name, value)  # frozen: the dataclass way to set fields in __init__

    @property
    def backend(self) -> Backend:
        """What the next call runs on (read-only: a switch goes through `slot.swap`)."""
        return self.slot.get()

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

    def pinned(self) -> Translator:
        """This translator on its current backend for good: a request's handle, whatever a switch does meanwhile."""
        return replace(self, slot=BackendSlot(self.backend))

    def __call__(
        self,
        image: Image.Image | str | Path | bytes | BinaryIO,
        *,
        tile: TileArg = "auto",
        outscale: float | None = None,
        progress: Progress | None = None,
        max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
        backend: Backend | None = None,
    ) -> Image.Image:
        """Translate or upscale `image`; the result is exactly `outscale` (default: the spec's scale) × its size.

        Alpha is upscaled separately for SR and passed through for translation; grayscale inputs come back
        grayscale, 16-bit grayscale comes back 16-bit. `backend` pins the backend for this call (default: the
        slot's at the start of the call, which a background preparation may switch between calls).
        """
        img = imaging.load_image(image, max_pixels=max_pixels)
        rgb, alpha, meta = imaging.split_image(img)
        h, w = rgb.shape[:2]
        x = imaging.to_tensor_range(rgb, self.spec.value_range)  # (1, 3, H, W)
        # (1, 3, H*s, W*s) → (H*s, W*s, 3) in [0, 1]; the network's array is freed as soon as it is converted
        y = self.run_array(x, tile=tile, progress=progress, backend=backend)
        out = imaging.from_tensor_range(y, self.spec.value_range)
        del y
        scale = self.spec.scale if outscale is None else float(outscale)
        if scale <= 0:
            raise GanModelsError(f"outscale must be positive, not {outscale}")
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL order (W, H)
        if (out.shape[1], out.shape[0]) != size:
            out = _resize_rgb(out, size)
        if alpha is not None and (alpha.shape[1], alpha.shape[0]) != size:
            alpha = imaging.resize_alpha(alpha, size)
        return imaging.merge_image(out, alpha, meta)

    def run_array(self, x: np.ndarray, *, tile: TileArg = "auto", progress: Progress | None = None,
                  backend: Backend | None = None) -> np.ndarray:
        """(1, C, H, W) float32 in the model's range → (1, C', H*scale, W*scale); any H, W ≥ 1.

        Chooses the tile ("auto": whole image unless it is too large for the memory budget) and runs
        `tiling.run_array`: pad to the size multiple (reflection), tiles, the tile halved on an out-of-memory error
        down to 64 px. One backend runs the whole call (`backend`, else the slot's at the start), also across
        out-of-memory retries.
        """
        backend = self.backend if backend is None else backend
        if x.ndim != 4 or x.shape[0] != 1:
            raise GanModelsError(f"expected a (1, C, H, W) array, got shape {x.shape}")
        h, w = x.shape[2:]
        return run_array(backend, x, self.spec, tile=self._choose_tile(h, w, tile, backend.device),
                         progress=progress)

    def _choose_tile(self, h: int, w: int, tile: TileArg, device: str) -> int | None:
        if tile == "auto":
            if self.spec.tile is None:
                return None  # InstanceNorm nets: whole image, as trained
            budget = _cuda_free_bytes() if device == "cuda" else self.tile_budget_mb * 2**20
            chosen = auto_tile(h, w, scale=self.spec.scale, budget_bytes=budget, multiple=self.spec.size_multiple)
            if chosen is None:
                return None
            return min(chosen, self.spec.tile * 4)
        if tile is not None and (not isinstance(tile, int) or tile < 0):
            raise GanModelsError(f"tile must be 'auto', None/0 or a positive integer, not {tile!r}")
        return requested_tile(tile, self.spec.size_multiple)


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
    tile_budget_mb: int = Settings.tile_budget_mb,
) -> Translator:
    """Load a model and wrap it in a Translator: the one-call entry point for the CLI, scripts and tests.

    Parameters:
        spec_or_id: a spec, an id of SPECS, a model folder or a custom model id (see `get_spec`).
        allow_fallback: a Hub model that cannot be downloaded is replaced by its bundled fallback, and
            `translator.fallback_reason` says so.
        backend, device, threads, precision, background, tile_budget_mb: see `build_translator`.

    Raises:
        WeightsUnavailableError, WeightsError: see `load_model`; GanModelsError etc.: see `build_translator`.
    """
    requested_backend(backend)  # before loading: a typo should not cost a download
    spec = get_spec(spec_or_id) if isinstance(spec_or_id, str) else spec_or_id
    return build_translator(load_model(spec, allow_fallback=allow_fallback), backend=backend, device=device,
                            threads=threads, precision=precision, background=background,
                            tile_budget_mb=tile_budget_mb)


def build_translator(
    loaded: LoadedModel,
    *,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    precision: str | None = None,
    background: bool = True,
    tile_budget_mb: int = Settings.tile_budget_mb,
) -> Translator:
    """A Translator that runs a loaded model on the chosen backend.

    Parameters:
        backend: "auto" (the fastest runtime that keeps quality, picked by the tournament in
            `gan_models.runtimes`; torch when that fails, with a logged warning), or a runtime: "torch",
            "onnxruntime" (alias "onnx"), ... (errors are raised, not hidden).
        device: "auto", "cpu" or "cuda".
        threads: CPU threads for either backend (None: torch's setting).
        precision: with a runtime other than torch: None (its fastest that passes) or one it offers.
        background: with "auto": return at once on torch and swap the translator's slot to the chosen runtime
            when a background worker has exported and timed it (a request already running keeps its backend).
            False chooses before returning (exports and times on first use of these weights).
        tile_budget_mb: working memory for automatic tiling on CPU.

    Raises:
        GanModelsError: unknown backend; BackendUnavailableError / OnnxExportError for a named runtime.
    """
    name = requested_backend(backend)
    if precision is not None and name == "torch" and precision != "fp32":
        raise GanModelsError(f"precision {precision!r} is for the onnx backend; the torch backend runs fp32")

    def translator(runner: Backend) -> Translator:
        return Translator(loaded.spec, runner, source=loaded.source, fallback_reason=loaded.fallback_reason,
                          tile_budget_mb=tile_budget_mb)

    if name == "auto" and background:
        result = translator(TorchBackend(loaded.module, device=resolve_device(device), threads=threads))
        prepare_in_background(loaded, device=device, threads=threads,
                              on_ready=result.slot.swap)
        return result
    return translator(backend_for(loaded, name, device=device, threads=threads, precision=precision))

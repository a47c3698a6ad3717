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
from .backends import Backend, BackendOutOfMemory, TorchBackend, resolve_device
from .errors import BackendUnavailableError, GanModelsError, OnnxExportError
from .settings import Settings
from .specs import ModelSpec, get_spec
from .tiling import auto_tile, run_tiled
from .weights import LoadedModel, WeightsSource, load_model

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
TileArg = int | None | Literal["auto"]
_MIN_TILE = 64
_MIN_SIDE = 32


class Translator:
    """Run one model on images of any size.

    Parameters:
        spec: what the model is (range, scale, size multiple, tiling advice).
        backend: runs the network on (N, C, H, W) float32 batches.
        source: where the weights came from (for info lines); None when unknown.
        fallback_reason: why this model stands in for the one asked for (`LoadedModel.fallback_reason`); None
            when it is the one asked for.
        tile_budget_mb: working memory for automatic tiling on CPU (`Settings.tile_budget_mb`); on CUDA the free
            device memory decides.
    """

    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        *,
        source: WeightsSource | None = None,
        fallback_reason: str | None = None,
        tile_budget_mb: int = Settings.tile_budget_mb,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.source = source
        self.fallback_reason = fallback_reason
        self.tile_budget_bytes = tile_budget_mb * 2**20

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

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
            budget = _cuda_free_bytes() if self.backend.device == "cuda" else self.tile_budget_bytes
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


BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
BACKEND_ENV = "GAN_STUDIO_BACKEND"


def _onnxruntime_importable() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend(spec: ModelSpec, *, device: str = "auto") -> str:
    """The fastest backend that passes parity for `spec`: "onnx" or "torch". Cheap: reads at most one small file.

    "onnx" when onnxruntime is importable and no earlier export of these weights failed its parity check (the
    first `translator_for` exports, checks, and falls back to torch if that fails, remembering the failure).
    GAN_STUDIO_BACKEND=torch (or onnx) overrides the choice for the whole process, e.g. in test runs that use
    many throw-away tiny models and should not pay for an export each.
    """
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced in ("torch", "onnx"):
        return forced
    if forced not in ("", "auto"):
        raise GanModelsError(f"{BACKEND_ENV}={forced!r}; choose one of: {', '.join(BACKENDS)}")
    if not _onnxruntime_importable():
        return "torch"
    try:
        from export.onnx_export import recorded_auto_ok
    except ImportError:  # the exporter ships with the repository, not with a bare copy of gan_models
        return "torch"
    onnx_device = "cuda" if device == "cuda" else "cpu"
    if device == "auto":
        import onnxruntime

        onnx_device = "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    return "torch" if recorded_auto_ok(spec, onnx_device) is False else "onnx"


def onnx_backend_for(
    loaded: LoadedModel, *, device: str = "auto", threads: int | None = None, precision: str | None = None
) -> Backend:
    """An OnnxBackend for a loaded model: its export from the cache (GAN_STUDIO_ONNX_CACHE), made on first use.

    precision None picks the fastest export that passes (int8 on CPU, fp16 on CUDA, else fp32; see
    `export.onnx_export.choose_precision`); "fp32", "fp16" or "int8" asks for one.

    Raises:
        BackendUnavailableError: onnxruntime or the exporter is missing, no CUDA provider, unsupported precision.
        OnnxExportError: the export failed or did not match PyTorch.
    """
    from .backends import OnnxBackend, import_onnxruntime, onnx_device

    import_onnxruntime()
    try:
        from export.onnx_export import cache_dir, check_precision, choose_precision, export_model
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the ONNX exporter (the repository's export/ package) cannot be imported: {exc}"
        ) from exc
    runtime_device = onnx_device(device)
    spec = loaded.spec
    if precision is None:
        chosen = choose_precision(spec, loaded.module, loaded.source, device=runtime_device, threads=threads)
    else:
        check_precision(precision)
        chosen = export_model(spec, cache_dir(), precisions=(precision,), module=loaded.module,
                              source=loaded.source)[0]
        if not chosen.passed:
            raise OnnxExportError(f"{spec.id} {precision}: {chosen.failure}")
    return OnnxBackend(chosen.onnx_path, device=runtime_device, threads=threads, precision=chosen.precision)


def translator_for(
    spec_or_id: ModelSpec | str,
    *,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    allow_fallback: bool = True,
    precision: str | None = None,
    tile_budget_mb: int = Settings.tile_budget_mb,
) -> Translator:
    """Load a model and wrap it in a Translator: the one-call entry point for the CLI, scripts and tests.

    Parameters:
        spec_or_id: a spec, an id of SPECS or a model folder (see `get_spec`).
        allow_fallback: a Hub model that cannot be downloaded is replaced by its bundled fallback, and
            `translator.fallback_reason` says so.
        backend, device, threads, precision, tile_budget_mb: see `build_translator`.

    Raises:
        WeightsUnavailableError, WeightsError: see `load_model`; GanModelsError etc.: see `build_translator`.
    """
    _check_backend(backend)  # before loading: a typo should not cost a download
    spec = get_spec(spec_or_id) if isinstance(spec_or_id, str) else spec_or_id
    return build_translator(load_model(spec, allow_fallback=allow_fallback), backend=backend, device=device,
                            threads=threads, precision=precision, tile_budget_mb=tile_budget_mb)


def build_translator(
    loaded: LoadedModel,
    *,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    precision: str | None = None,
    tile_budget_mb: int = Settings.tile_budget_mb,
) -> Translator:
    """A Translator that runs a loaded model on the chosen backend.

    Parameters:
        backend: "auto" (the fastest that passes parity, see `default_backend`; falls back to torch, with a
            logged warning, when the ONNX export cannot be made), "torch" (plain PyTorch) or "onnx" (errors
            are raised, not hidden).
        device: "auto", "cpu" or "cuda".
        threads: CPU threads for either backend (None: torch's setting).
        precision: ONNX only: None (fastest that passes), "fp32", "fp16" or "int8".
        tile_budget_mb: working memory for automatic tiling on CPU.

    Raises:
        GanModelsError: unknown backend; BackendUnavailableError / OnnxExportError for backend="onnx".
    """
    _check_backend(backend)
    name = default_backend(loaded.spec, device=device) if backend == "auto" else backend
    if precision is not None and name == "torch" and precision != "fp32":
        raise GanModelsError(f"precision {precision!r} is for the onnx backend; the torch backend runs fp32")
    runner: Backend | None = None
    if name == "onnx":
        try:
            runner = onnx_backend_for(loaded, device=device, threads=threads, precision=precision)
        except (BackendUnavailableError, OnnxExportError) as exc:
            if backend != "auto":
                raise
            logger.warning("%s: ONNX backend unavailable, using torch: %s", loaded.spec.id, exc)
    if runner is None:
        runner = TorchBackend(loaded.module, device=resolve_device(device), threads=threads)
    return Translator(loaded.spec, runner, source=loaded.source, fallback_reason=loaded.fallback_reason,
                      tile_budget_mb=tile_budget_mb)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise GanModelsError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")

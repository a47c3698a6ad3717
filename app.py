"""GAN Image Studio: the browser front door and the Gradio client API over `gan_models`.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)
    python app.py --mcp                # also serve the MCP endpoint (or GRADIO_MCP_SERVER=1)

Handlers convert Gradio values, delegate to `gan_models` and turn library errors into `gr.Error`. Nothing is loaded
at import time: models load on first use and stay in a small cache shared by all requests. Settings come from the
environment (see AppConfig.from_env), so the same file runs locally, on a CPU Space and on a CUDA machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image, UnidentifiedImageError

from gan_models import (
    SPECS,
    GanModelsError,
    ImageTooLargeError,
    InvalidImageError,
    ModelSpec,
    Translator,
    UnknownModelError,
    WeightsError,
    WeightsSource,
    WeightsUnavailableError,
    default_backend,
    get_spec,
    imaging,
    translator_for,
)
from gan_models.runtimes import resolve_device, tune_malloc

logger = logging.getLogger("gan_studio")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
RESULT_HEIGHT = 420  # px on screen; small results are scaled up to it, large ones down
CANVAS_SIZE = 512  # drawn at 2x the pix2pix training size, then resized: smoother strokes than a 256 canvas
MAX_ASPECT = 4  # resizing by the short side never makes the long side more than this many times it
EMPTY_CANVAS_MESSAGE = "The canvas is empty: draw something or upload a sketch"
ORIGINS = {
    "bundled": "bundled with the app",
    "local": "local file",
    "hub-cache": "Hugging Face cache",
    "hub": "downloaded from the Hugging Face Hub",
}
STYLE_SIZES = [
    ("Original (up to the size cap)", "original"), ("512 px short side", "512"), ("256 px short side", "256"),
]
TILE_CHOICES = [("Auto", "auto"), ("128", "128"), ("256", "256"), ("512", "512"), ("None (whole image)", "none")]


def _env_bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class AppConfig:
    """How the app runs; every field has an environment variable so a Space needs no code change.

    Parameters:
        backend: "auto", "torch" or "onnx" (GAN_STUDIO_BACKEND).
        device: "auto", "cpu" or "cuda" (GAN_STUDIO_DEVICE); "auto" uses CUDA when present.
        concurrency: model runs at once across all tabs (GAN_STUDIO_CONCURRENCY); more than the CPU cores
            only makes every request slower.
        queue_size: waiting requests before new ones are refused (GAN_STUDIO_QUEUE_SIZE).
        max_file_size: upload cap passed to launch() (GAN_STUDIO_MAX_FILE_SIZE, e.g. "25mb").
        max_input_pixels: decoded-size guard for style and sketch inputs (GAN_STUDIO_MAX_PIXELS).
        max_upscale_pixels: input cap for upscaling: the x4 result has 16x as many pixels
            (GAN_STUDIO_MAX_UPSCALE_PIXELS).
        max_style_side: "original size" style transfer shrinks the long side to this (GAN_STUDIO_MAX_SIDE).
        preview_side: long side of the before/after preview; the PNG download is always full size
            (GAN_STUDIO_PREVIEW_SIDE).
        retry_after_s: how long a Hub failure or a broken model is remembered before trying again
            (GAN_STUDIO_RETRY_AFTER_S).
        threads: CPU threads per model run, set once at start-up by main() (GAN_STUDIO_THREADS); 0 leaves
            torch's default.
        mcp: serve the MCP endpoint (GRADIO_MCP_SERVER).
    """

    backend: str = "auto"
    device: str = "auto"
    concurrency: int = 2
    queue_size: int = 32
    max_file_size: str = "25mb"
    max_input_pixels: int = 50_000_000
    max_upscale_pixels: int = 4_000_000
    max_style_side: int = 1024
    preview_side: int = 2048
    retry_after_s: float = 600.0
    threads: int = 0
    mcp: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AppConfig:
        def get(name: str, default: Any, kind: Callable[[str], Any] = str) -> Any:
            raw = environ.get(name)
            return default if raw in (None, "") else kind(raw)

        concurrency = get("GAN_STUDIO_CONCURRENCY", cls.concurrency, int)
        return cls(
            backend=get("GAN_STUDIO_BACKEND", cls.backend),
            device=get("GAN_STUDIO_DEVICE", cls.device),
            concurrency=concurrency,
            queue_size=get("GAN_STUDIO_QUEUE_SIZE", cls.queue_size, int),
            max_file_size=get("GAN_STUDIO_MAX_FILE_SIZE", cls.max_file_size),
            max_input_pixels=get("GAN_STUDIO_MAX_PIXELS", cls.max_input_pixels, int),
            max_upscale_pixels=get("GAN_STUDIO_MAX_UPSCALE_PIXELS", cls.max_upscale_pixels, int),
            max_style_side=get("GAN_STUDIO_MAX_SIDE", cls.max_style_side, int),
            preview_side=get("GAN_STUDIO_PREVIEW_SIDE", cls.preview_side, int),
            retry_after_s=get("GAN_STUDIO_RETRY_AFTER_S", cls.retry_after_s, float),
            threads=get("GAN_STUDIO_THREADS", max(1, (os.cpu_count() or 1) // max(1, concurrency)), int),
            mcp=_env_bool(environ.get("GRADIO_MCP_SERVER")),
        )


@dataclass
class _Entry:
    translator: Translator | None
    error: GanModelsError | None
    expires: float  # time.monotonic() after which the entry is retried; inf for a model that loaded fine


class TranslatorCache:
    """Loaded translators shared by all requests, keyed by (spec id, backend, device).

    A Translator holds no per-request state, so one instance serves concurrent requests. Failures are remembered
    for `retry_after_s` so that, with the Hub unreachable, later requests do not wait on the network again. A Hub
    model that cannot be had is served by its bundled `fallback` spec; that model is loaded once and shared by every
    Hub model that falls back to it.

    Parameters:
        specs: the models the app offers, by id.
        backend, device: passed to `translator_for`.
        retry_after_s: how long a failure (or a fallback in place of a Hub model) is remembered.
    """

    def __init__(
        self, specs: Mapping[str, ModelSpec], *, backend: str = "auto", device: str = "auto", retry_after_s: float
    ) -> None:
        self.specs = dict(specs)
        self.backend = backend
        self.device = device
        self.retry_after_s = retry_after_s
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _key(self, model_id: str) -> tuple[str, str, str]:
        return (model_id, self.backend, self.device)

    def spec(self, model_id: str) -> ModelSpec:
        try:
            return self.specs[model_id]
        except KeyError:
            raise UnknownModelError(f"unknown model {model_id!r}; choose one of: {', '.join(self.specs)}") from None

    def get(self, model_id: str) -> Translator:
        """The translator for `model_id`, loading it on first use (one load at a time per model).

        Raises:
            UnknownModelError, WeightsError, WeightsUnavailableError, GanModelsError: the (remembered) failure.
        """
        spec = self.spec(model_id)
        key = self._key(model_id)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() >= entry.expires:
                entry = self._load(spec)
                self._entries[key] = entry
        if entry.error is not None:
            raise entry.error
        assert entry.translator is not None
        return entry.translator

    def _load(self, spec: ModelSpec) -> _Entry:
        retry_at = time.monotonic() + self.retry_after_s
        try:
            translator = translator_for(spec, backend=self.backend, device=self.device, allow_fallback=False)
            return _Entry(translator, None, float("inf"))
        except WeightsUnavailableError as exc:
            if spec.fallback is None or spec.fallback not in self.specs or spec.fallback == spec.id:
                logger.warning("%s unavailable: %s", spec.id, exc)
                return _Entry(None, exc, retry_at)
            try:
                shared = self.get(spec.fallback)
            except GanModelsError as fallback_exc:
                logger.warning("%s unavailable and its fallback %s failed: %s", spec.id, spec.fallback, fallback_exc)
                return _Entry(None, exc, retry_at)
            note = f"Hub unreachable for {spec.id}; using the bundled {shared.spec.id} instead ({exc})"
            source = shared.source
            fallback_source = WeightsSource(
                path=source.path if source else Path(), origin=source.origin if source else "bundled",
                spec_id=shared.spec.id, note=note,
            )
            return _Entry(Translator(shared.spec, shared.backend, source=fallback_source), None, retry_at)
        except GanModelsError as exc:
            logger.warning("%s failed to load: %s", spec.id, exc)
            return _Entry(None, exc, retry_at)

    def status(self, model_id: str) -> tuple[bool, str]:
        """(available, status text) without loading anything."""
        spec = self.spec(model_id)
        if spec.bundled is not None and spec.repo_id is None and not spec.bundled.is_file():
            return False, f"unavailable: weights file {spec.bundled.name} is missing"
        entry = self._entries.get(self._key(model_id))
        if entry is None:
            return True, "not loaded yet"
        if entry.error is not None:
            return False, f"unavailable: {entry.error}"
        assert entry.translator is not None
        source = entry.translator.source
        if source is not None and source.note:
            return True, f"fallback: {source.note}"
        return True, "loaded"


# --- conversions -------------------------------------------------------------------------------------------------


class ImageInput(gr.Image):
    """gr.Image that hands uploads to the handler unopened, so `gan_models.imaging` reads them.

    Gradio would open every upload with PIL first: an empty file or a decompression bomb then fails inside Gradio
    with PIL's wording, before the library's guard and messages get a say. Pasted images (data URLs) still go
    through Gradio, with its errors made plain. The browser side is the stock Image component.
    """

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload: Any) -> Any:
        if (payload is not None and self.type == "filepath" and self.image_mode is None and payload.path
                and not (payload.url or "").startswith("data:")):
            return str(payload.path)
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except UnidentifiedImageError as exc:
            raise gr.Error("The upload is not a readable image (unknown or corrupt format)") from exc
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files; all mean "cannot read"
            raise gr.Error(f"The upload is not a readable image: {exc}") from exc


class SketchInput(gr.Sketchpad):
    """gr.Sketchpad whose images are read by `gan_models.imaging`, like every other input of the app.

    Gradio's own reading converts straight to RGB with PIL: EXIF orientation is ignored, 16-bit sketches turn white
    and a truncated file or a decompression bomb ends in a generic error. Here the library reads the file (guard
    before decoding, orientation, first frame of animations, 16-bit), transparency is composited on white paper as
    the canvas shows it, and unreadable files give a message that names the problem. The browser side is the stock
    Sketchpad. `max_pixels` is set after construction: Gradio builds the browser's props from constructor arguments.
    """

    max_pixels: int = imaging.DEFAULT_MAX_PIXELS

    def get_block_name(self) -> str:
        return "imageeditor"

    def convert_and_format_image(self, file: FileData | bytes | None, flatten_on_white: bool = False) -> Any:
        if file is None:
            return None
        with _user_errors():
            img = imaging.load_image(file.path if isinstance(file, FileData) else bytes(file),
                                     max_pixels=self.max_pixels)
            rgb, alpha, meta = imaging.split_image(img)
        if alpha is not None:
            rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])  # on white paper
        # 8-bit RGB, as image_mode="RGB" promises; merge_image keeps the reading notes on the result.
        return imaging.merge_image(rgb, None, dataclasses.replace(meta, grayscale=False, has_alpha=False,
                                                                  bit_depth=8))


def for_display(img: Image.Image) -> Image.Image:
    """An 8-bit copy the browser shows correctly (16-bit PNGs come out white in Gradio's viewer); keeps alpha."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I") else 1.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        return img
    return img.convert("RGBA" if "transparency" in img.info or img.mode in ("PA", "RGBa") else "RGB")


def _resized(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`img` at `size` (W, H) with a smooth filter; P and 1 images become RGB(A) first (PIL cannot filter them)."""
    if img.size == size:
        return img
    if img.mode in ("P", "PA", "1"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    return img.resize(size, Image.Resampling.LANCZOS)


def _fit_long_side(img: Image.Image, side: int) -> Image.Image:
    """Shrink so the long side is at most `side`; smaller images are returned unchanged."""
    w, h = img.size
    k = min(1.0, side / max(w, h))
    return _resized(img, (max(1, round(w * k)), max(1, round(h * k))))


def _resize_short_side(img: Image.Image, side: int) -> Image.Image:
    """Resize (up or down) so the short side is `side`, but the long side at most MAX_ASPECT x `side`.

    Without the cap a 1x5000 strip would become 256 x 1 280 000 px before it reaches the model.
    """
    w, h = img.size
    k = min(side / min(w, h), MAX_ASPECT * side / max(w, h))
    return _resized(img, (max(1, round(w * k)), max(1, round(h * k))))


def _parse_tile(tile: str | int | None) -> int | str | None:
    if tile in (None, "none", "None", 0, "0"):
        return None
    if tile == "auto":
        return "auto"
    try:
        return int(tile)
    except (TypeError, ValueError):
        raise gr.Error(f"tile must be auto, none or a number of pixels, not {tile!r}") from None


def _progress_callback(progress: gr.Progress) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress((done, total), desc="Running the model", unit="tiles")

    return report


@contextmanager
def _user_errors(model_id: str | None = None) -> Iterator[None]:
    """Library errors become gr.Error with a plain message; the server keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except ImageTooLargeError as exc:
        raise gr.Error(f"The image is too large: {exc}") from exc
    except InvalidImageError as exc:
        raise gr.Error(f"This is not a readable image: {exc}") from exc
    except WeightsError as exc:
        raise gr.Error(f"Model {model_id} is unavailable (its weights file cannot be used); pick another model. "
                       f"Details: {exc}") from exc
    except WeightsUnavailableError as exc:
        raise gr.Error(f"Model {model_id} is unavailable (its weights cannot be downloaded and no bundled fallback "
                       f"loaded); pick another model. Details: {exc}") from exc
    except GanModelsError as exc:
        raise gr.Error(str(exc)) from exc
    except MemoryError as exc:
        raise gr.Error("Out of memory: try a smaller image, a smaller tile size or a lower output size") from exc


class Studio:
    """The handlers behind the UI and the API: convert, delegate to gan_models, report.

    Parameters:
        specs: models offered, by id (SPECS by default; tests pass tiny local models).
        config: runtime settings.
    """

    def __init__(self, *, specs: Mapping[str, ModelSpec], config: AppConfig) -> None:
        self.config = config
        self.cache = TranslatorCache(specs, backend=config.backend, device=config.device,
                                     retry_after_s=config.retry_after_s)
        self._out_dir: Path | None = None
        self._out_lock = threading.Lock()

    @property
    def specs(self) -> dict[str, ModelSpec]:
        return self.cache.specs

    def choices(self, task: str) -> list[tuple[str, str]]:
        return [(spec.title, spec.id) for spec in self.specs.values() if spec.task == task]

    def default_model(self, task: str) -> str | None:
        ids = [spec.id for spec in self.specs.values() if spec.task == task]
        if task == "upscale" and self.config.device != "cuda":
            # RRDBNet x4 takes minutes per megapixel on a CPU; the compact bundled model takes seconds.
            bundled = [i for i in ids if self.specs[i].is_bundled]
            ids = bundled + [i for i in ids if i not in bundled]
        return ids[0] if ids else None

    def _translator(self, model_id: str, task: str, progress: gr.Progress) -> Translator:
        spec = self.cache.spec(model_id)
        if spec.task != task:
            raise gr.Error(f"{model_id} is a {spec.task} model; choose one of: "
                           f"{', '.join(i for _, i in self.choices(task))}")
        progress(0, desc=f"Loading {spec.title}")
        return self.cache.get(model_id)

    def _info(self, requested: str, translator: Translator, seconds: float, result: Image.Image) -> str:
        spec, backend, source = translator.spec, translator.backend, translator.source
        size = result.size
        origin = ORIGINS.get(source.origin, source.origin) if source is not None else "unknown"
        if spec.repo_id and source is not None and source.origin in ("hub", "hub-cache"):
            origin += f" ({spec.repo_id})"
        # int8/fp16 trade a little accuracy (>= 40 dB PSNR vs fp32, checked at export): say so
        runtime = backend.name if backend.precision == "fp32" else f"{backend.name} {backend.precision}"
        line = (f"**{spec.title}** (`{spec.id}`) · {runtime} on {backend.device} · {seconds:.2f} s · "
                f"{size[0]}×{size[1]} px · weights: {origin}")
        if source is not None and source.note:
            line += f"\n\n⚠️ {source.note}"
        elif requested != spec.id:
            line += f"\n\n⚠️ {requested} is served by {spec.id}"
        notes = imaging.image_notes(result)
        if notes:  # what happened to the input on the way: first frame of an animation, CMYK converted, ...
            line += "\n\nℹ️ " + "; ".join(notes)
        return line

    def _write_png(self, img: Image.Image, stem: str) -> str:
        """Save `img` as a uniquely named PNG (atomically) and return its path.

        Handlers return images as these files, not as PIL images: Gradio saves a PIL output under a name derived
        from its content and rewrites that file in place, so two requests with the same result (the same example
        clicked twice) could serve each other a half-written file. A file path is copied into Gradio's cache
        atomically instead.
        """
        with self._out_lock:
            if self._out_dir is None:
                self._out_dir = Path(tempfile.mkdtemp(prefix="gan-studio-"))
            cutoff = time.time() - 3600  # Gradio keeps its own copy for the browser; ours only has to outlive it
            for old in self._out_dir.glob("*.png"):
                if old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "image"
        path = self._out_dir / f"{safe}-{uuid.uuid4().hex[:12]}.png"
        return str(imaging.save_png(img, path))

    # --- handlers (their names and docstrings are the API and MCP descriptions) -----------------------------------

    def style_transfer(
        self, image: str | None, style: str, output_size: str = "original", progress: gr.Progress = gr.Progress()
    ) -> tuple[str, str]:
        """Repaint a photo in another style with a CycleGAN generator.

        Args:
            image: the photo (any size; alpha, grayscale and 16-bit are kept).
            style: a style model id (see /models, task "style").
            output_size: "original" (capped at the app's size limit), "512" or "256" (short side in pixels).

        Returns:
            The restyled image (PNG) and an info line: model, backend, device, time, weights source.
        """
        if image is None:
            raise gr.Error("Upload a photo first")
        with _user_errors(style):
            translator = self._translator(style, "style", progress)
            start = time.perf_counter()
            img = imaging.load_image(image, max_pixels=self.config.max_input_pixels)
            if output_size in (None, "", "original"):
                img = _fit_long_side(img, self.config.max_style_side)
            elif str(output_size).isdigit():
                img = _resize_short_side(img, int(output_size))
            else:
                raise gr.Error(f"output_size must be original, 512 or 256, not {output_size!r}")
            result = translator(img, progress=_progress_callback(progress))
            seconds = time.perf_counter() - start
        preview = self._write_png(for_display(result), f"{Path(str(image)).stem}_{translator.spec.id}")
        return preview, self._info(style, translator, seconds, result)

    def sketch_to_photo(
        self, sketch: dict | None, model: str, fit_to_model: bool = True, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, str]:
        """Turn a sketch (black strokes on white) or an edge map into a photo with a Pix2Pix generator.

        Args:
            sketch: the canvas value {"background", "layers", "composite"}; the composite (else the background)
                is used, so API callers may send {"background": <image file>, "layers": [], "composite": None}.
            model: a sketch-to-photo model id (see /models, task "sketch2photo").
            fit_to_model: resize the drawing so its short side is the model's training size (256 px), the long side
                at most 4 times that.

        Returns:
            The generated photo (PNG) and an info line.
        """
        drawing = None
        if isinstance(sketch, dict):
            drawing = sketch.get("composite") or sketch.get("background")
        elif isinstance(sketch, (str, Image.Image)):
            drawing = sketch
        if drawing is None:
            raise gr.Error(EMPTY_CANVAS_MESSAGE)
        with _user_errors(model):
            img = imaging.load_image(drawing, max_pixels=self.config.max_input_pixels)
            gray = np.asarray(img.convert("L"))
            if int(gray.max()) - int(gray.min()) < 8:  # a blank (uniform) canvas or upload
                raise gr.Error(EMPTY_CANVAS_MESSAGE)
            translator = self._translator(model, "sketch2photo", progress)
            start = time.perf_counter()
            size = translator.spec.input_size
            if fit_to_model and size:
                img = _resize_short_side(img.convert("RGB"), size)
            result = translator(img, progress=_progress_callback(progress))
            seconds = time.perf_counter() - start
        preview = self._write_png(for_display(result), f"sketch_{translator.spec.id}")
        return preview, self._info(model, translator, seconds, result)

    def edges_from_photo(self, photo: str | None, model: str) -> dict:
        """The edge map the sketch models were trained on, from a photo, placed on the canvas."""
        if photo is None:
            raise gr.Error("Upload a photo to turn into an edge map")
        with _user_errors(model):
            size = self.cache.spec(model).input_size if model in self.specs else None
            edges = imaging.edges_from_photo(imaging.load_image(photo, max_pixels=self.config.max_input_pixels),
                                             size=size)
        return {"background": edges, "layers": [], "composite": None}

    def upscale(
        self,
        image: str | None,
        model: str,
        outscale: int = 4,
        tile: str = "auto",
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[tuple[str, str], str, str]:
        """Upscale an image with an SRGAN-family generator; alpha, grayscale, 16-bit, ICC and EXIF are kept.

        Args:
            image: the image to upscale (at most the app's upscale pixel limit).
            model: an upscale model id (see /models, task "upscale").
            outscale: 2, 3 or 4: the result is exactly this many times the input size.
            tile: "auto", "none" or a tile size in input pixels ("128", "256", "512").

        Returns:
            (before, after) preview pair (8-bit, long side capped), the lossless full-size PNG file, an info line.
        """
        if image is None:
            raise gr.Error("Upload an image first")
        try:
            scale = float(outscale)
        except (TypeError, ValueError):
            raise gr.Error(f"outscale must be 2, 3 or 4, not {outscale!r}") from None
        if not 1 <= scale <= 8:
            raise gr.Error(f"outscale must be between 1 and 8, not {outscale}")
        tile_arg = _parse_tile(tile)
        with _user_errors(model):
            translator = self._translator(model, "upscale", progress)
            start = time.perf_counter()
            source = imaging.load_image(image, max_pixels=self.config.max_upscale_pixels)
            result = translator(source, tile=tile_arg, outscale=scale, progress=_progress_callback(progress),
                                max_pixels=self.config.max_upscale_pixels)
            seconds = time.perf_counter() - start
            path = self._write_png(result, f"{Path(str(image)).stem}_x{scale:g}")
        after = _fit_long_side(for_display(result), self.config.preview_side)
        before = _resized(for_display(source), after.size)
        previews = (self._write_png(before, "before"), self._write_png(after, "after"))
        return previews, path, self._info(model, translator, seconds, result)

    def models(self) -> list[dict[str, Any]]:
        """Every model the app offers: id, title, task, bundled, available, status, hub repo, licence.

        Returns:
            A JSON list; "available" is false for models whose weights failed to load (the reason is in "status").
        """
        rows = []
        for spec in self.specs.values():
            available, status = self.cache.status(spec.id)
            rows.append({
                "id": spec.id,
                "title": spec.title,
                "task": spec.task,
                "bundled": spec.is_bundled,
                "available": available,
                "status": status,
                "hub_repo": spec.repo_id,
                "hub_file": spec.filename,
                "revision": spec.revision,
                "fallback": spec.fallback,
                "scale": spec.scale,
                "input_size": spec.input_size,
                "licence": spec.licence,
            })
        return rows

    def runtime(self) -> str:
        """Backend and device in use, for the Settings panel."""
        try:
            device = resolve_device(self.config.device)
        except GanModelsError as exc:
            device = f"unavailable ({exc})"
        backends = sorted({default_backend(s) if self.config.backend == "auto" else self.config.backend
                           for s in self.specs.values()})
        hub = "offline (HF_HUB_OFFLINE=1): bundled models only" if _env_bool(os.environ.get("HF_HUB_OFFLINE")) \
            else "online: Hub models download on first use"
        return (f"**Backend:** {self.config.backend} → {', '.join(backends)} · **Device:** {self.config.device} → "
                f"{device} · **Hub:** {hub} · **Model runs at once:** {self.config.concurrency}")


def models_table(rows: list[dict[str, Any]] | None) -> str:
    """Markdown table of the /models rows for the Settings panel."""
    lines = ["| model | task | weights | status |", "|---|---|---|---|"]
    for row in rows or []:
        where = "bundled" if row["bundled"] else f"Hub: `{row['hub_repo']}`" if row["hub_repo"] else "local file"
        lines.append(f"| {row['title']} (`{row['id']}`) | {row['task']} | {where} | {row['status']} |")
    return "\n".join(lines)


def _examples(rows: list[list[Any]]) -> list[list[Any]]:
    """Example rows whose files exist (a checkout without examples/ still starts); paths as strings."""
    kept = [row for row in rows if all(v is not None and (not isinstance(v, Path) or v.is_file()) for v in row)]
    return [[str(v) if isinstance(v, Path) else v for v in row] for row in kept]


def _canvas_example(path: Path) -> dict[str, Any] | None:
    """A sketch file as a canvas value (the upload becomes the canvas background)."""
    return {"background": str(path), "layers": [], "composite": str(path)} if path.is_file() else None


def build_demo(*, specs: Mapping[str, ModelSpec] | None = None, config: AppConfig | None = None) -> gr.Blocks:
    """The whole app: three task tabs and a Settings panel; the queue is set up here with explicit concurrency.

    Parameters:
        specs: models to offer (default: gan_models.SPECS); tests pass tiny local models.
        config: runtime settings (default: AppConfig.from_env()).
    """
    config = config or AppConfig.from_env()
    studio = Studio(specs=SPECS if specs is None else specs, config=config)
    heavy = {"concurrency_id": "model", "concurrency_limit": config.concurrency}
    light = {"concurrency_limit": None, "api_visibility": "private"}

    with gr.Blocks(title="GAN Image Studio", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# GAN Image Studio\nStyle transfer (CycleGAN), sketch to photo (Pix2Pix) and upscaling "
                    "(SRGAN family). Any image size; transparency, grayscale and 16-bit are kept.")
        with gr.Tabs():
            with gr.Tab("Style transfer", id="style"):
                with gr.Row():
                    with gr.Column():
                        style_in = ImageInput(label="Photo", type="filepath", image_mode=None, format="png",
                                              sources=["upload", "clipboard"])
                        style_model = gr.Dropdown(studio.choices("style"), value=studio.default_model("style"),
                                                  label="Style")
                        style_size = gr.Radio(STYLE_SIZES, value="original", label="Output size")
                        style_btn = gr.Button("Apply style", variant="primary")
                    with gr.Column():
                        style_out = gr.Image(label="Result", type="pil", format="png", image_mode=None,
                                             interactive=False, height=RESULT_HEIGHT, elem_id="style-output")
                        style_info = gr.Markdown()
                gr.Examples(_examples([[EXAMPLES_DIR / "landscape.jpg", studio.default_model("style"), "original"],
                                       [EXAMPLES_DIR / "logo_rgba.png", studio.default_model("style"), "256"]]),
                            inputs=[style_in, style_model, style_size])

            with gr.Tab("Sketch to photo", id="sketch"):
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("Pick the brush ✏️ and draw black strokes on white, or upload a sketch or edge "
                                    "map ⬆️; the drawing is resized to the model's training size.")
                        canvas = SketchInput(
                            label="Sketch",
                            type="pil", image_mode="RGB", format="png",
                            canvas_size=(CANVAS_SIZE, CANVAS_SIZE), sources=["upload", "clipboard"],
                            brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=4),
                            layers=False, transforms=(), elem_id="sketch-canvas",
                        )
                        canvas.max_pixels = config.max_input_pixels
                        sketch_model = gr.Dropdown(studio.choices("sketch2photo"),
                                                   value=studio.default_model("sketch2photo"), label="Model")
                        sketch_fit = gr.Checkbox(True, label="Resize to the model's training size")
                        sketch_btn = gr.Button("Make photo", variant="primary", elem_id="sketch-run")
                        with gr.Accordion("Edges from a photo", open=False):
                            edge_photo = ImageInput(label="Photo", type="filepath", image_mode=None, format="png",
                                                    sources=["upload", "clipboard"])
                            edge_btn = gr.Button("Put its edge map on the canvas")
                            gr.Examples(_examples([[EXAMPLES_DIR / "landscape.jpg"]]), inputs=[edge_photo])
                    with gr.Column():
                        sketch_out = gr.Image(label="Result", type="pil", format="png", image_mode=None,
                                              interactive=False, height=RESULT_HEIGHT, elem_id="sketch-output")
                        sketch_info = gr.Markdown(elem_id="sketch-info")
                gr.Examples(
                    _examples([[_canvas_example(EXAMPLES_DIR / "shoe_sketch.png")],
                               [_canvas_example(EXAMPLES_DIR / "house_sketch.png")]]),
                    inputs=[canvas], label="Example sketches",
                )

            with gr.Tab("Upscale", id="upscale"):
                with gr.Row():
                    with gr.Column():
                        up_in = ImageInput(label="Image", type="filepath", image_mode=None, format="png",
                                           sources=["upload", "clipboard"], elem_id="upscale-input")
                        up_model = gr.Dropdown(studio.choices("upscale"), value=studio.default_model("upscale"),
                                               label="Model")
                        with gr.Row():
                            up_scale = gr.Radio([2, 3, 4], value=4, label="Output scale")
                            up_tile = gr.Dropdown(TILE_CHOICES, value="auto", label="Tile size")
                        up_btn = gr.Button("Upscale", variant="primary", elem_id="upscale-run")
                    with gr.Column():
                        up_slider = gr.ImageSlider(label="Before / after", type="pil", format="png",
                                                   image_mode=None, interactive=False, elem_id="upscale-slider")
                        up_file = gr.File(label="Lossless PNG (full size)", interactive=False)
                        up_info = gr.Markdown(elem_id="upscale-info")
                gr.Examples(_examples([[EXAMPLES_DIR / "small_landscape.png"], [EXAMPLES_DIR / "logo_rgba.png"],
                                       [EXAMPLES_DIR / "gray16.png"]]), inputs=[up_in])

        with gr.Accordion("Settings and models", open=False):
            runtime_md = gr.Markdown()
            models_md = gr.Markdown()
            models_btn = gr.Button("Refresh model list", size="sm")
            with gr.Accordion("/models as JSON", open=False):
                models_json = gr.JSON(label="Models")

        style_btn.click(studio.style_transfer, [style_in, style_model, style_size], [style_out, style_info],
                        api_name="style_transfer", **heavy)
        sketch_btn.click(studio.sketch_to_photo, [canvas, sketch_model, sketch_fit], [sketch_out, sketch_info],
                         api_name="sketch_to_photo", **heavy)
        edge_btn.click(studio.edges_from_photo, [edge_photo, sketch_model], canvas, api_name="edges_from_photo",
                       **light)
        up_btn.click(studio.upscale, [up_in, up_model, up_scale, up_tile], [up_slider, up_file, up_info],
                     api_name="upscale", **heavy)
        models_btn.click(studio.models, None, models_json, api_name="models", concurrency_limit=None).then(
            models_table, models_json, models_md, api_name="models_table", **light)
        demo.load(studio.runtime, None, runtime_md, api_name="runtime", **light).then(
            studio.models, None, models_json, api_name="models_on_load", **light).then(
            models_table, models_json, models_md, api_name="models_table_on_load", **light)

    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    return demo


def launch_options(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments for demo.launch(): upload cap, theme (a launch() argument since Gradio 6), MCP."""
    return {
        "max_file_size": config.max_file_size,
        "theme": gr.themes.Soft(),
        "mcp_server": config.mcp,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GAN Image Studio web app")
    parser.add_argument("--mcp", action="store_true", help="also serve the MCP endpoint (needs gradio[mcp])")
    parser.add_argument("--weights", nargs="+", default=[], metavar="PATH",
                        help="also offer these local models: train.py run folders (their final/) or model folders "
                             "holding config.json + model.safetensors; each appears in its task's tab")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    config = AppConfig.from_env()
    if args.mcp:
        config = dataclasses.replace(config, mcp=True)
    if config.mcp and importlib.util.find_spec("mcp") is None:
        parser.error("the MCP server needs the mcp package: pip install 'gradio[mcp]==6.31.0'")
    tune_malloc()
    if config.threads:
        import torch

        # Process-wide, so set once here: `concurrency` runs share the cores instead of oversubscribing them.
        torch.set_num_threads(config.threads)
    try:
        specs = app_specs(args.weights)
    except GanModelsError as exc:
        parser.error(str(exc))
    build_demo(specs=specs, config=config).launch(**launch_options(config))


def app_specs(paths: list[str]) -> dict[str, ModelSpec]:
    """SPECS plus the local models given with --weights.

    Raises:
        GanModelsError: a path that is not a model or run folder, or a model id already taken; names the path.
    """
    specs = dict(SPECS)
    for path in paths:
        try:
            spec = get_spec(path)
        except GanModelsError as exc:
            raise GanModelsError(f"--weights {path}: {exc}") from exc
        if spec.id in specs and specs[spec.id].bundled != spec.bundled:
            raise GanModelsError(f"--weights {path}: its model id {spec.id!r} is already taken; rename it in its "
                                 "config.json")
        specs[spec.id] = spec
    return specs


if __name__ == "__main__":
    main()

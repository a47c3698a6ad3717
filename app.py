"""GAN Image Studio: the browser front door and the Gradio client API over `gan_models`.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)
    python app.py --mcp                # also serve the MCP endpoint (or GRADIO_MCP_SERVER=1)

Handlers convert Gradio values, delegate to `gan_models` and turn library errors into `gr.Error`. Nothing is loaded
at import time: models load on first use and stay in a small cache shared by all requests. Settings come from the
environment (see gan_models.settings.Settings.from_env), so the same file runs locally, on a CPU Space and on a CUDA
machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from gradio.utils import _parse_file_size
from PIL import Image, UnidentifiedImageError

from gan_models import (
    SPECS,
    TASKS,
    GanModelsError,
    ImageTooLargeError,
    InvalidImageError,
    LoadedModel,
    ModelSpec,
    Settings,
    Translator,
    UnknownModelError,
    WeightsError,
    WeightsUnavailableError,
    build_translator,
    default_backend,
    deploy,
    get_spec,
    imaging,
    load_model,
)
from gan_models.custom import SWITCH as custom_switch
from gan_models.custom import WEIGHTS_SUFFIXES, file_safe_name, resolve_custom
from gan_models.errors import UnsupportedModelError, first_line
from gan_models.runtimes import (
    Backend,
    prepare_in_background,
    requested_backend,
    resolve_device,
    serving,
    tune_malloc,
)
from gan_models.settings import hub_cache_dir, hub_offline, user_cache_dir
from gan_models.tiling import parse_tile

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
CUSTOM_CHOICE = "custom"  # the model pickers' "Custom model…" entry; never a Hub id (those hold a '/')
CUSTOM_LABEL = "Custom model…"
FAILURES_KEPT = 64  # remembered load failures (small) beside the max_models loaded translators
CUSTOM_ROWS_KEPT = 32  # custom ids listed at /models, most recent last


@dataclass
class _Entry:
    translator: Translator | None
    error: GanModelsError | None
    expires: float  # time.monotonic() after which the entry is retried; inf for a model that loaded fine


class TranslatorCache:
    """Loaded translators shared by all requests, keyed by (spec id, backend, device); a bounded LRU.

    A Translator holds no per-request state, so one instance serves concurrent requests. At most
    `settings.max_models` translators stay loaded: loading one more drops the least recently used that no running
    request holds (see `use`); curated models reload on demand like custom ones. Failures are remembered for
    `retry_after_s` so that, with the Hub unreachable, later requests do not wait on the network again. A Hub
    model that cannot be had is served by its bundled `fallback` spec (`load_model` decides); the fallback's
    translator is made once and shared by every Hub model that falls back to it, so one copy stays in memory.

    Parameters:
        specs: the models the app offers, by id; a fallback must be one of them. Other ids are custom models
            (`gan_models.custom`), resolved with the settings' max_weights_mb and custom_models switch.
        settings: backend, device, retry_after_s (how long a failure, or a fallback in place of a Hub model, is
            remembered), tile_budget_mb, max_models, max_weights_mb and custom_models.
    """

    def __init__(self, specs: Mapping[str, ModelSpec], *, settings: Settings) -> None:
        self.specs = dict(specs)
        self.settings = settings
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()  # least recently used first
        self._in_use: Counter[tuple[str, str, str]] = Counter()  # running requests per key: never evicted
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._custom: OrderedDict[str, ModelSpec | GanModelsError] = OrderedDict()  # custom ids tried, for /models
        self._guard = threading.Lock()

    def _key(self, model_id: str) -> tuple[str, str, str]:
        return (model_id, self.settings.backend, self.settings.device)

    def _lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def spec(self, model_id: str, *, allow_local: bool = False) -> ModelSpec:
        """An offered model's spec, else the custom model `model_id` names (downloaded and detected once).

        Parameters:
            allow_local: let `model_id` name a file on this machine (the app's own upload paths); text typed by
                visitors is a Hub id only.

        Raises:
            UnknownModelError, UnsupportedModelError, WeightsUnavailableError, WeightsError: see
                `gan_models.custom.resolve_custom`; custom models switched off names GAN_STUDIO_CUSTOM_MODELS.
        """
        if model_id in self.specs:
            return self.specs[model_id]
        try:
            spec: ModelSpec | GanModelsError = resolve_custom(
                model_id, max_weights_mb=self.settings.max_weights_mb, enabled=self.settings.custom_models,
                allow_local=allow_local, url_hosts=self.settings.url_hosts)
        except UnknownModelError:
            raise  # not a model id at all: nothing to list
        except GanModelsError as exc:
            spec = exc
        if self.settings.custom_models:
            with self._guard:
                self._custom[model_id] = spec
                self._custom.move_to_end(model_id)
                while len(self._custom) > CUSTOM_ROWS_KEPT:
                    self._custom.popitem(last=False)
        if isinstance(spec, GanModelsError):
            raise spec
        return spec

    def custom_specs(self) -> list[tuple[str, ModelSpec | GanModelsError]]:
        """The custom ids tried lately (oldest first) with their spec, or why they could not be resolved."""
        with self._guard:
            return list(self._custom.items())

    def known_specs(self) -> Mapping[str, ModelSpec]:
        """A live view of the offered specs and the custom ones resolved so far; reading it never downloads."""
        return _KnownSpecs(self)

    def get(self, model_id: str) -> Translator:
        """The translator for `model_id`, loading it on first use; see `use` for how long it stays loaded."""
        with self.use(self.spec(model_id)) as translator:
            return translator

    @contextmanager
    def use(self, spec: ModelSpec) -> Iterator[Translator]:
        """The translator for `spec` (loaded on first use, one load at a time per model), held loaded while the
        block runs: eviction skips it until every request using it has finished.

        Raises:
            WeightsError, WeightsUnavailableError, GanModelsError: the (remembered) failure.
        """
        key = self._key(spec.id)
        with self._lock(key):
            with self._guard:
                entry = self._entries.get(key)
            if entry is None or time.monotonic() >= entry.expires:
                entry = self._load(spec)
            with self._guard:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                if entry.translator is not None:
                    self._in_use[key] += 1
                self._evict()
        if entry.error is not None:
            raise entry.error
        assert entry.translator is not None
        try:
            yield entry.translator
        finally:
            with self._guard:
                self._in_use[key] -= 1
                if not self._in_use[key]:
                    del self._in_use[key]
                self._evict()  # what was skipped while in use

    def loaded(self) -> list[str]:
        """Ids of the loaded translators, least recently used first."""
        with self._guard:
            return [key[0] for key, entry in self._entries.items() if entry.translator is not None]

    def _evict(self) -> None:
        """Drop least recently used translators over max_models (not those in use) and old failures; call with
        `_guard` held. A running request keeps its own reference, so dropping ours never breaks it."""
        loaded = [key for key, entry in self._entries.items() if entry.translator is not None]
        excess = len(loaded) - self.settings.max_models
        for key in loaded:
            if excess <= 0:
                break
            if not self._in_use[key]:
                self._forget(key)
                excess -= 1
        failed = [key for key, entry in self._entries.items() if entry.translator is None]
        for key in failed[:max(0, len(failed) - FAILURES_KEPT)]:
            self._forget(key)

    def _forget(self, key: tuple[str, str, str]) -> None:
        del self._entries[key]
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():  # else a load of this key is under way and keeps it
            del self._locks[key]

    def _load(self, spec: ModelSpec) -> _Entry:
        retry_at = time.monotonic() + self.settings.retry_after_s
        try:
            loaded = load_model(spec, specs=self.specs)
            if not loaded.fell_back:
                return _Entry(self._build(loaded), None, float("inf"))
            shared = self._shared_fallback(loaded)
        except GanModelsError as exc:
            logger.warning("%s failed to load: %s", spec.id, exc)
            return _Entry(None, exc, retry_at)
        logger.warning("%s", loaded.fallback_reason)
        # Remembered for retry_after_s only: after that the Hub is tried again.
        translator = Translator(shared.spec, shared.backend, source=shared.source,
                                fallback_reason=loaded.fallback_reason, tile_budget_mb=self.settings.tile_budget_mb)
        if shared.backend.name == "torch" and requested_backend(self.settings.backend) == "auto":
            # The shared translator may still be on torch while its runtime is prepared: follow the same job (it
            # is joined, or calls back at once when it has finished).
            prepare_in_background(LoadedModel(spec=shared.spec, module=shared.backend.model, source=shared.source),
                                  device=self.settings.device, on_ready=lambda chosen: setattr(translator, "backend",
                                                                                               chosen))
        return _Entry(translator, None, retry_at)

    def _shared_fallback(self, loaded: LoadedModel) -> Translator:
        """The fallback model's own cached translator; made from `loaded` when there is none yet.

        `load_model` has just read the fallback's weights (a small bundled file); when the fallback is already
        cached that copy is dropped here, so one copy stays in memory. Called with the requested model's lock held;
        fallbacks are bundled models without a fallback of their own, so the two locks are never taken the other
        way round.
        """
        key = self._key(loaded.spec.id)
        with self._lock(key):
            with self._guard:
                entry = self._entries.get(key)
            if entry is None or entry.translator is None or time.monotonic() >= entry.expires:
                own = dataclasses.replace(loaded, requested=loaded.spec, fallback_reason=None)
                entry = _Entry(self._build(own), None, float("inf"))
                with self._guard:
                    self._entries[key] = entry
            assert entry.translator is not None
            return entry.translator

    def _build(self, loaded: LoadedModel) -> Translator:
        return build_translator(loaded, backend=self.settings.backend, device=self.settings.device,
                                tile_budget_mb=self.settings.tile_budget_mb)

    def status(self, spec: ModelSpec) -> tuple[bool, str]:
        """(available, status text) without loading anything."""
        if spec.bundled is not None and not spec.sources and not spec.bundled.is_file():
            return False, f"unavailable: weights file {spec.bundled.name} is missing"
        with self._guard:
            entry = self._entries.get(self._key(spec.id))
        if entry is None:
            return True, "not loaded (loads on first use)"
        if entry.error is not None:
            return False, f"unavailable: {entry.error}"
        assert entry.translator is not None
        if entry.translator.fallback_reason is not None:
            return True, f"fallback: {entry.translator.fallback_reason}"
        return True, "loaded"


class _KnownSpecs(Mapping[str, ModelSpec]):
    """TranslatorCache.known_specs(): what deploy.gpu_durations sizes a ZeroGPU reservation from, at request time."""

    def __init__(self, cache: TranslatorCache) -> None:
        self._cache = cache

    def _all(self) -> dict[str, ModelSpec]:
        seen = {key: spec for key, spec in self._cache.custom_specs() if isinstance(spec, ModelSpec)}
        return {**seen, **self._cache.specs}

    def __getitem__(self, model_id: str) -> ModelSpec:
        return self._all()[model_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


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
            raise gr.Error(f"The upload is not a readable image: {first_line(exc)}") from exc


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

    def api_info_as_input(self) -> dict[str, Any]:
        """The canvas value as the API and MCP take it: image files for "background" and "composite".

        Gradio's own schema wraps each file in `anyOf [FileData $ref, null]` under nested $defs: its MCP server then
        leaves a $ref that points nowhere (an invalid schema) and does not turn a file URL sent there into a file.
        Files inlined at a fixed place are what it converts. Layers are left out: the handler never reads them.
        """
        file = _inlined_file_schema()
        return {
            "title": "EditorData",
            "type": "object",
            "properties": {
                "background": {**file, "description": "the drawing (black strokes on white): an image file"},
                "composite": {**file, "description": "optional: used instead of the background when given"},
            },
        }


def _inlined_file_schema() -> dict[str, Any]:
    """Gradio's FileData schema with its one $ref ("meta") inlined and no $defs, to nest in another schema."""
    schema = FileData.model_json_schema()
    defs = schema.pop("$defs")
    schema.pop("description", None)
    schema["properties"]["meta"] = defs[schema["properties"]["meta"]["$ref"].rsplit("/", 1)[-1]]
    return schema


class ModelDropdown(gr.Dropdown):
    """gr.Dropdown for a model id, built with allow_custom_value=True: its API schema takes any id.

    Gradio declares a dropdown's choices as an enum even when custom values are allowed, so a schema-checking MCP
    client would refuse a Hub id; here the choices are examples.
    """

    def get_block_name(self) -> str:
        return "dropdown"

    def api_info(self) -> dict[str, Any]:
        return {"type": "string", "examples": [value for _, value in self.choices]}


class IntegerRadio(gr.Radio):
    """gr.Radio of integer choices whose API schema says integer (Gradio declares every Radio a string, so that
    choices [2, 3, 4] made a schema that no value satisfies)."""

    def get_block_name(self) -> str:
        return "radio"

    def api_info(self) -> dict[str, Any]:
        return {**super().api_info(), "type": "integer"}


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


def _progress_callback(progress: gr.Progress) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress((done, total), desc="Running the model", unit="tiles")

    return report


@contextmanager
def _user_errors(model_id: str | None = None, upload: str | None = None) -> Iterator[None]:
    """Library errors become gr.Error with a plain message; the server keeps serving. A visitor's `upload` (a
    weights file) is named by its own file name, never by the server's temporary path."""
    try:
        try:
            yield
        except GanModelsError as exc:
            if upload is None:
                raise
            text = str(exc)
            for path in {str(upload), str(Path(upload).resolve())}:
                text = text.replace(path, Path(upload).name)
            raise type(exc)(text) from exc
    except gr.Error:
        raise
    except ImageTooLargeError as exc:
        raise gr.Error(f"The image is too large: {exc}") from exc
    except InvalidImageError as exc:
        raise gr.Error(f"This is not a readable image: {exc}") from exc
    except UnsupportedModelError as exc:  # a custom model we will not load: the message says why and what to do
        raise gr.Error(str(exc)) from exc
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

    def __init__(self, *, specs: Mapping[str, ModelSpec], config: Settings) -> None:
        self.config = config
        self.cache = TranslatorCache(specs, settings=config)
        self._out_dir: Path | None = None
        self._out_lock = threading.Lock()

    @property
    def specs(self) -> dict[str, ModelSpec]:
        return self.cache.specs

    def choices(self, task: str) -> list[tuple[str, str]]:
        """The task's offered models as (title, id), then the custom entry when custom models are on."""
        offered = [(spec.title, spec.id) for spec in self.specs.values() if spec.task == task]
        return offered + ([(CUSTOM_LABEL, CUSTOM_CHOICE)] if self.config.custom_models else [])

    def default_model(self, task: str) -> str | None:
        ids = [spec.id for spec in self.specs.values() if spec.task == task]
        if task == "upscale" and self.config.device != "cuda":
            # RRDBNet x4 takes minutes per megapixel on a CPU; the compact bundled model takes seconds.
            bundled = [i for i in ids if self.specs[i].is_bundled]
            ids = bundled + [i for i in ids if i not in bundled]
        return ids[0] if ids else None

    def warm_defaults(self) -> threading.Thread:
        """Load each tab's default model in a background thread (start-up), so the first request finds it loaded;
        with backend "auto" its fastest runtime is then prepared in the background too. Returns the thread."""

        def load_defaults() -> None:
            for task in TASKS:
                model_id = self.default_model(task)
                if model_id is None:
                    continue
                try:
                    self.cache.get(model_id)
                except GanModelsError as exc:  # the tab says so when it is used; start-up goes on
                    logger.warning("warming %s failed: %s", model_id, first_line(exc))

        thread = threading.Thread(target=load_defaults, name="warm-defaults", daemon=True)
        thread.start()
        return thread

    @contextmanager
    def _model(self, model: str | None, task: str, progress: gr.Progress, weights_file: str | None = None
               ) -> Iterator[Translator]:
        """The translator `model` names, held loaded for the block: an offered id, a Hub id, or (model "custom")
        the uploaded `weights_file` (the file drop's file_types refuse other suffixes). Visitors' text never
        reaches this machine's files; uploads are local."""
        if model == CUSTOM_CHOICE:
            if not self.config.custom_models:
                self.cache.spec(CUSTOM_CHOICE)  # raises the switched-off message
            if not weights_file:
                raise gr.Error("Custom model: type a Hub id (owner/name[/file.pth][@revision][#network]) or drop a "
                               "weights file")
            spec = self.cache.spec(str(weights_file), allow_local=True)
        else:
            spec = self.cache.spec(model or "")
        if spec.task != task:
            offered = ", ".join(i for _, i in self.choices(task) if i != CUSTOM_CHOICE)
            article = "an" if spec.task[0] in "aeiou" else "a"
            raise gr.Error(f"{_shown(spec.id)} is {article} {spec.task} model, not for {task}; choose one of: {offered}"
                           + (f", or a custom {task} model" if self.config.custom_models else ""))
        progress(0, desc=f"Loading {spec.title}")
        with self.cache.use(spec) as translator, serving():  # background preparation pauses meanwhile
            yield translator

    def _info(self, requested: str, translator: Translator, backend: Backend, seconds: float,
              result: Image.Image) -> str:
        spec, source = translator.spec, translator.source
        size = result.size
        origin = ORIGINS.get(source.origin, source.origin) if source is not None else "unknown"
        if source is not None and source.hub is not None:
            origin += f" ({source.hub.repo_id})"
        # int8/fp16 trade a little accuracy (>= 40 dB PSNR vs fp32, checked at export): say so
        runtime = backend.name if backend.precision == "fp32" else f"{backend.name} {backend.precision}"
        if requested == CUSTOM_CHOICE:  # an upload: the spec is the file
            requested = spec.id
        line = (f"**{spec.title}** (`{_shown(spec.id)}`) · {runtime} on {backend.device} · {seconds:.2f} s · "
                f"{size[0]}×{size[1]} px · weights: {origin}")
        if translator.fallback_reason is not None:
            line += f"\n\n⚠️ {translator.fallback_reason}"
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
    # Gradio reads the first line of each argument only (and each Returns line as one item): keep them one line.

    def style_transfer(
        self, image: str | None, style: str, output_size: str = "original", weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, str]:
        """Repaint a photo in another style with a CycleGAN generator.

        A Hub id is owner/name[/file.pth][@revision][#network][?range=0,1].

        Args:
            image: the photo (any size; alpha, grayscale and 16-bit are kept).
            style: a style model id (see the models tool), a Hugging Face Hub id of a CycleGAN generator, or "custom".
            output_size: "original" (capped at the app's size limit), "512" or "256" (short side in pixels).
            weights_file: a generator weights file (.safetensors, .pth, ...), used when `style` is "custom".

        Returns:
            The restyled image (PNG) and an info line: model, backend, device, time, weights source.
        """
        if image is None:
            raise gr.Error("Upload a photo first")
        named = _named(style, weights_file)
        with _user_errors(named, _upload(style, weights_file)), self._model(style, "style", progress,
                                                                            weights_file) as translator:
            start = time.perf_counter()
            img = imaging.load_image(image, max_pixels=self.config.max_input_pixels)
            if output_size in (None, "", "original"):
                img = _fit_long_side(img, self.config.max_style_side)
            elif str(output_size).isdigit():
                img = _resize_short_side(img, int(output_size))
            else:
                raise gr.Error(f"output_size must be original, 512 or 256, not {output_size!r}")
            backend = translator.backend  # the path this request runs, whatever a background switch does meanwhile
            result = translator(img, progress=_progress_callback(progress), backend=backend)
            seconds = time.perf_counter() - start
        preview = self._write_png(for_display(result), f"{Path(str(image)).stem}_{file_safe_name(translator.spec.id)}")
        return preview, self._info(style, translator, backend, seconds, result)

    def sketch_to_photo(
        self, sketch: dict | None, model: str, fit_to_model: bool = True, weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, str]:
        """Turn a sketch (black strokes on white) or an edge map into a photo with a Pix2Pix generator.

        A Hub id is owner/name[/file.pth][@revision][#network]. When resized, the long side stays at most 4 times
        the training size.

        Args:
            sketch: the canvas value: {"background": <image file>}; its "composite", when given, is used instead.
            model: a sketch model id (see the models tool), a Hugging Face Hub id of a Pix2Pix generator, or "custom".
            fit_to_model: resize the drawing so its short side is the model's training size (256 px).
            weights_file: a generator weights file (.safetensors, .pth, ...), used when `model` is "custom".

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
        with _user_errors(_named(model, weights_file), _upload(model, weights_file)):
            img = imaging.load_image(drawing, max_pixels=self.config.max_input_pixels)
            gray = np.asarray(img.convert("L"))
            if int(gray.max()) - int(gray.min()) < 8:  # a blank (uniform) canvas or upload
                raise gr.Error(EMPTY_CANVAS_MESSAGE)
            with self._model(model, "sketch2photo", progress, weights_file) as translator:
                start = time.perf_counter()
                size = translator.spec.input_size
                if fit_to_model and size:
                    img = _resize_short_side(img.convert("RGB"), size)
                backend = translator.backend
                result = translator(img, progress=_progress_callback(progress), backend=backend)
                seconds = time.perf_counter() - start
        preview = self._write_png(for_display(result), f"sketch_{file_safe_name(translator.spec.id)}")
        return preview, self._info(model, translator, backend, seconds, result)

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
        weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[tuple[str, str], str, str]:
        """Upscale an image with an SRGAN-family generator; alpha, grayscale, 16-bit, ICC and EXIF are kept.

        A Hub id is owner/name[/file.pth][@revision][#network], e.g. owner/name/RealESRGAN_x4plus.pth.

        Args:
            image: the image to upscale (at most the app's upscale pixel limit).
            model: an upscale model id (see the models tool), a Hugging Face Hub id of an SR generator, or "custom".
            outscale: 1, 2, 3 or 4 (an integer): the result is this many times the input size (1: restoration models).
            tile: "auto", "none" or a tile size in input pixels ("128", "256", "512").
            weights_file: a generator weights file (.safetensors, .pth, ...), used when `model` is "custom".

        Returns:
            (before, after) preview pair (8-bit, long side capped), the lossless full-size PNG file, an info line.
        """
        if image is None:
            raise gr.Error("Upload an image first")
        try:
            scale = float(outscale)
        except (TypeError, ValueError):
            raise gr.Error(f"outscale must be 1, 2, 3 or 4, not {outscale!r}") from None
        if not 1 <= scale <= 8:
            raise gr.Error(f"outscale must be between 1 and 8, not {outscale}")
        with _user_errors():
            tile_arg = parse_tile(tile)
        named = _named(model, weights_file)
        with _user_errors(named, _upload(model, weights_file)), self._model(model, "upscale", progress,
                                                                             weights_file) as translator:
            start = time.perf_counter()
            source = imaging.load_image(image, max_pixels=self.config.max_upscale_pixels)
            backend = translator.backend
            result = translator(source, tile=tile_arg, outscale=scale, progress=_progress_callback(progress),
                                max_pixels=self.config.max_upscale_pixels, backend=backend)
            seconds = time.perf_counter() - start
            path = self._write_png(result, f"{Path(str(image)).stem}_x{scale:g}")
        after = _fit_long_side(for_display(result), self.config.preview_side)
        before = _resized(for_display(source), after.size)
        previews = (self._write_png(before, "before"), self._write_png(after, "after"))
        return previews, path, self._info(model, translator, backend, seconds, result)

    def models(self) -> list[dict[str, Any]]:
        """Every model the app offers, then the custom models tried lately: id, title, task, custom, family,
        arch, bundled, available, status, hub repo, licence. Custom rows say what was detected ("family", "arch");
        one that could not be resolved has only its id, "available": false and the reason.

        Returns:
            A JSON list; "available" is false for models whose weights failed to load (the reason is in "status").
        """
        rows = [_model_row(spec, *self.cache.status(spec), custom=False) for spec in self.specs.values()]
        for model_id, spec in self.cache.custom_specs():
            if isinstance(spec, ModelSpec):
                rows.append(_model_row(spec, *self.cache.status(spec), custom=True))
            else:
                rows.append({"id": _shown(model_id), "custom": True, "available": False,
                             "status": f"unavailable: {first_line(spec)}"})
        return rows

    def runtime(self) -> str:
        """Backend and device in use, for the Settings panel."""
        try:
            device = resolve_device(self.config.device)
        except GanModelsError as exc:
            device = f"unavailable ({exc})"
        backends = sorted({default_backend(s) if self.config.backend == "auto" else self.config.backend
                           for s in self.specs.values()})
        hub = ("offline (HF_HUB_OFFLINE=1): bundled models only" if hub_offline()
               else "online: Hub models download on first use")
        caches = f"Hub `{hub_cache_dir()}` · ONNX `{self.config.onnx_cache or user_cache_dir() / 'onnx'}`"
        custom = (f"on (Hub ids and uploads up to {upload_weights_mb(self.config)} MB; downloads up to "
                  f"{self.config.max_weights_mb} MB)" if self.config.custom_models
                  else f"off ({custom_switch}=0)")
        return (f"**Backend:** {self.config.backend} → {', '.join(backends)} · **Device:** {self.config.device} → "
                f"{device} · **Hub:** {hub} · **Model runs at once:** {self.config.concurrency} · "
                f"**Models kept loaded:** {self.config.max_models} · **Custom models:** {custom} · "
                f"**Caches:** {caches}")


def _model_row(spec: ModelSpec, available: bool, status: str, *, custom: bool) -> dict[str, Any]:
    return {
        "id": _shown(spec.id),
        "title": spec.title,
        "task": spec.task,
        "custom": custom,
        # custom specs describe themselves as "<detected family>: <numbers read from the file>"
        "family": spec.description.partition(": ")[0] if custom else None,
        "arch": spec.arch,
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
    }


def _named(model: str | None, weights_file: str | None) -> str | None:
    """What a request's model is called in messages: the uploaded file's name for the custom entry."""
    return _shown(str(weights_file)) if model == CUSTOM_CHOICE and weights_file else model


def _upload(model: str | None, weights_file: str | None) -> str | None:
    """The uploaded weights file's server path when the request uses it, else None."""
    return str(weights_file) if model == CUSTOM_CHOICE and weights_file else None


def _shown(model_id: str) -> str:
    """A model id as users see it: an uploaded file by its name, not the server's temporary path."""
    return Path(model_id).name if Path(model_id).is_absolute() else model_id


def models_table(rows: list[dict[str, Any]] | None) -> str:
    """Markdown table of the /models rows for the Settings panel."""
    lines = ["| model | task | weights | status |", "|---|---|---|---|"]
    for row in rows or []:
        if "title" not in row:  # a custom id that could not be resolved
            lines.append(f"| custom: `{row['id']}` | | | {row['status']} |")
            continue
        where = "bundled" if row["bundled"] else f"Hub: `{row['hub_repo']}`" if row["hub_repo"] else "local file"
        if row["custom"]:
            where = f"custom, {row['family']} · {where}"
        lines.append(f"| {row['title']} (`{row['id']}`) | {row['task']} | {where} | {row['status']} |")
    return "\n".join(lines)


def _examples(rows: list[list[Any]]) -> list[list[Any]]:
    """Example rows whose files exist (a checkout without examples/ still starts); paths as strings."""
    kept = [row for row in rows if all(v is not None and (not isinstance(v, Path) or v.is_file()) for v in row)]
    return [[str(v) if isinstance(v, Path) else v for v in row] for row in kept]


def _canvas_example(path: Path) -> dict[str, Any] | None:
    """A sketch file as a canvas value (the upload becomes the canvas background)."""
    return {"background": str(path), "layers": [], "composite": str(path)} if path.is_file() else None


def _model_picker(studio: Studio, task: str, *, label: str, prefix: str) -> tuple[gr.Dropdown, gr.File]:
    """A tab's model dropdown and, behind its "Custom model…" entry, a Hub id field and a weights-file drop.

    The dropdown accepts any value so that API callers can pass a Hub id as `model`; in the browser the run
    button's js puts the typed id in the entry's place (`_custom_id_js`). The file drop is the handler's
    `weights_file` argument.
    """
    custom = studio.config.custom_models
    dropdown = ModelDropdown(studio.choices(task), value=studio.default_model(task), label=label,
                             allow_custom_value=True, elem_id=f"{prefix}-model")
    with gr.Group(visible=False) as group:
        gr.Textbox(label="Hugging Face Hub model id or https URL", max_lines=1, elem_id=f"{prefix}-custom-id",
                   placeholder="owner/name[/file.pth][@revision][#network][?range=0,1] or https://…/file.pth")
        weights = gr.File(label=f"…or drop a weights file (up to {upload_weights_mb(studio.config)} MB)",
                          file_types=list(WEIGHTS_SUFFIXES), type="filepath", height=110,
                          elem_id=f"{prefix}-custom-file")
    if custom:
        dropdown.change(lambda choice: gr.Group(visible=choice == CUSTOM_CHOICE), dropdown, group,
                        api_visibility="private", queue=False)
    return dropdown, weights


def _custom_id_js(prefix: str) -> str:
    """Browser code run before a model handler: with "Custom model…" chosen, no file dropped and an id typed, the
    typed id becomes the `model` argument (inputs: image, model, ..., weights file)."""
    return (f"(...args) => {{ const box = document.querySelector('#{prefix}-custom-id textarea, "
            f"#{prefix}-custom-id input'); const typed = box ? box.value.trim() : ''; "
            f"if (args[1] === '{CUSTOM_CHOICE}' && !args[args.length - 1] && typed) args[1] = typed; "
            "return args; }")


def build_demo(*, specs: Mapping[str, ModelSpec] | None = None, config: Settings | None = None,
               warm: bool = False) -> gr.Blocks:
    """The whole app: three task tabs and a Settings panel; the queue is set up here with explicit concurrency.

    Parameters:
        specs: models to offer (default: gan_models.SPECS); tests pass tiny local models.
        config: runtime settings (default: Settings.from_env()).
        warm: load each tab's default model in the background now (`python app.py` does; building stays instant).
    """
    config = config or Settings.from_env()
    studio = Studio(specs=SPECS if specs is None else specs, config=config)
    if warm:
        studio.warm_defaults()
    heavy = {"concurrency_id": "model", "concurrency_limit": config.concurrency}
    # A custom id is sized once it has been resolved; before that (its first call, or an upload) the duration
    # functions fall back to their base reservation.
    durations = deploy.gpu_durations(studio.cache.known_specs(), max_style_side=config.max_style_side)
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
                        style_model, style_weights = _model_picker(studio, "style", label="Style", prefix="style")
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
                        sketch_model, sketch_weights = _model_picker(studio, "sketch2photo", label="Model",
                                                                     prefix="sketch")
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
                        up_model, up_weights = _model_picker(studio, "upscale", label="Model", prefix="upscale")
                        with gr.Row():
                            up_scale = IntegerRadio([1, 2, 3, 4], value=4,
                                                    label="Output scale (1: restore at the same size)")
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

        style_btn.click(deploy.gpu(studio.style_transfer, duration=durations["style_transfer"]),
                        [style_in, style_model, style_size, style_weights], [style_out, style_info],
                        api_name="style_transfer", js=_custom_id_js("style"), **heavy)
        sketch_btn.click(deploy.gpu(studio.sketch_to_photo, duration=durations["sketch_to_photo"]),
                         [canvas, sketch_model, sketch_fit, sketch_weights], [sketch_out, sketch_info],
                         api_name="sketch_to_photo", js=_custom_id_js("sketch"), **heavy)
        edge_btn.click(studio.edges_from_photo, [edge_photo, sketch_model], canvas, api_name="edges_from_photo",
                       **light)
        up_btn.click(deploy.gpu(studio.upscale, duration=durations["upscale"]),
                     [up_in, up_model, up_scale, up_tile, up_weights], [up_slider, up_file, up_info],
                     api_name="upscale", js=_custom_id_js("upscale"), **heavy)
        models_btn.click(studio.models, None, models_json, api_name="models", concurrency_limit=None).then(
            models_table, models_json, models_md, api_name="models_table", **light)
        demo.load(studio.runtime, None, runtime_md, api_name="runtime", **light).then(
            studio.models, None, models_json, api_name="models_on_load", **light).then(
            models_table, models_json, models_md, api_name="models_table_on_load", **light)

    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    return demo


def upload_weights_mb(config: Settings) -> int:
    """The largest weights file a visitor may upload: max_weights_mb within launch's upload cap (0: custom models
    off)."""
    return min(config.max_weights_mb, _parse_file_size(config.max_file_size) // (1024 * 1024)) \
        if config.custom_models else 0


def launch_options(config: Settings) -> dict[str, Any]:
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
    for name, folder in deploy.use_persistent_storage().items():  # before any Hub access or cache read
        logger.info("persistent storage: %s=%s", name, folder)
    try:
        config = Settings.from_env()
    except GanModelsError as exc:
        parser.error(str(exc))
    # This imports `spaces` before CUDA is touched, as ZeroGPU requires.
    if overrides := deploy.zerogpu_overrides():
        config = config.replace(**overrides)
    if args.mcp:
        config = config.replace(mcp=True)
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
    build_demo(specs=specs, config=config, warm=True).launch(**launch_options(config))


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

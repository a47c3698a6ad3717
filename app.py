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
import functools
import importlib.util
import inspect
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
    ModelSpec,
    Settings,
    Translator,
    WeightsError,
    WeightsUnavailableError,
    budget,
    deploy,
    get_spec,
    imaging,
    zerogpu,
)
from gan_models.cache import ModelCache
from gan_models.custom import WEIGHTS_SUFFIXES, file_safe_name
from gan_models.errors import UnsupportedModelError, first_line
from gan_models.imaging import fit_long_side, for_display, resize_short_side, resized
from gan_models.runtimes import default_preparer, serving, tune_malloc
from gan_models.studio import ResultFiles, default_model, info_line, model_rows, models_table, runtime_summary, shown
from gan_models.tiling import parse_tile
from gan_models.video import VideoResult, iter_translate_video

logger = logging.getLogger("gan_studio")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
RESULT_HEIGHT = 420  # px on screen; small results are scaled up to it, large ones down
CANVAS_SIZE = 512  # drawn at 2x the pix2pix training size, then resized: smoother strokes than a 256 canvas
EMPTY_CANVAS_MESSAGE = "The canvas is empty: draw something or upload a sketch"
STYLE_SIZES = [
    ("Original (up to the size cap)", "original"), ("512 px short side", "512"), ("256 px short side", "256"),
]
TILE_CHOICES = [("Auto", "auto"), ("128", "128"), ("256", "256"), ("512", "512"), ("None (whole image)", "none")]
CUSTOM_CHOICE = "custom"  # the model pickers' "Custom model…" entry; never a Hub id (those hold a '/')
CUSTOM_LABEL = "Custom model…"
CUSTOM_ROWS_KEPT = 32  # custom ids listed at a visitor's /models, most recent last
SESSIONS_KEPT = 4096  # visitors' sessions whose custom ids are remembered for their /models (least recent dropped)
# An absolute path inside a message (an upload's temporary folder, a cache): shown by its last part only.
_SERVER_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s'\"`<>|:;,()\[\]{}]+/)+([^\s'\"`<>|:;,()\[\]{}/]+)")


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

    def preprocess(self, payload: Any) -> Any:
        """One image is decoded, at most `max_pixels` of it: the composite, else the background (what
        `Studio.sketch_to_photo` uses). Layers are never decoded (the composite already holds them): a value
        listing one upload many times, or many large layers, costs nothing."""
        if payload is None:
            return None
        value = payload
        if payload.id is not None:
            value = self.blob_storage.pop(payload.id, None)
        if value is None:
            return None
        chosen = value.composite if value.composite is not None else value.background
        image = self.convert_and_format_image(chosen, flatten_on_white=True)
        return {"background": None if value.composite is not None else image, "layers": [], "composite":
                image if value.composite is not None else None}

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


def _progress_callback(progress: gr.Progress) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress((done, total), desc="Running the model", unit="tiles")

    return report


def redact(text: str) -> str:
    """`text` with every absolute server path shortened to its last part: what a client may be shown."""
    return _SERVER_PATH.sub(lambda m: m.group(1), text)


@contextmanager
def _user_errors(model_id: str | None = None, upload: str | None = None) -> Iterator[None]:
    """Every error a request raises reaches the client as one gr.Error line naming no server path (never Gradio's
    generic message; a visitor's `upload` by its own file name); unexpected ones are logged with their traceback.
    The server keeps serving."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - each kind gets its sentence below
        message = _user_message(exc, model_id)
        if message is None:
            logger.exception("request failed")
            message = f"The request failed ({type(exc).__name__}: {first_line(exc)})"
        if upload is not None:
            for path in {str(upload), str(Path(upload).resolve())}:
                message = message.replace(path, Path(upload).name)
        raise gr.Error(redact(message)) from exc


def _one_line(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` with every error it raises turned into one gr.Error line (see `_user_errors`)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _user_errors():
            return handler(*args, **kwargs)

    # Its name, docstring and signature (the API and MCP descriptions) without __wrapped__: that marks a ZeroGPU call.
    functools.update_wrapper(wrapped, handler)
    wrapped.__signature__ = inspect.signature(handler)  # type: ignore[attr-defined]
    del wrapped.__wrapped__
    return wrapped


def _user_message(exc: Exception, model_id: str | None) -> str | None:
    """The sentence for a client about `exc`; None for an error no rule covers (a bug: logged)."""
    if isinstance(exc, gr.Error):
        return exc.message
    if isinstance(exc, ImageTooLargeError):
        return f"The image is too large: {exc}"
    if isinstance(exc, InvalidImageError):
        return f"This is not a readable image: {exc}"
    if isinstance(exc, UnsupportedModelError):  # a custom model we will not load: the message says why and what to do
        return str(exc)
    if isinstance(exc, WeightsError):
        return (f"Model {model_id} is unavailable (its weights file cannot be used); pick another model. "
                f"Details: {exc}")
    if isinstance(exc, WeightsUnavailableError):
        return (f"Model {model_id} is unavailable (its weights cannot be downloaded and no bundled fallback "
                f"loaded); pick another model. Details: {exc}")
    if isinstance(exc, GanModelsError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "The input is nested too deeply to be read"
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller image, a smaller tile size or a lower output size"
    return None


class Studio:
    """The handlers behind the UI and the API: convert, delegate to gan_models, report.

    Parameters:
        specs: models offered, by id (SPECS by default; tests pass tiny local models).
        config: runtime settings.
    """

    def __init__(self, *, specs: Mapping[str, ModelSpec], config: Settings) -> None:
        self.config = config
        self.cache = ModelCache(specs, settings=config)
        self.files = ResultFiles()
        self.gpu_runs = zerogpu.GpuLedger()  # what ZeroGPU calls did, brought back to this process
        self._sessions: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()  # custom ids by visitor session
        self._sessions_lock = threading.Lock()

    @property
    def specs(self) -> dict[str, ModelSpec]:
        return self.cache.specs

    def choices(self, task: str | tuple[str, ...]) -> list[tuple[str, str]]:
        """The task's (or tasks') offered models as (title, id), then the custom entry when custom models are on."""
        tasks = (task,) if isinstance(task, str) else task
        offered = [(spec.title, spec.id) for t in tasks for spec in self.specs.values() if spec.task == t]
        return offered + ([(CUSTOM_LABEL, CUSTOM_CHOICE)] if self.config.custom_models else [])

    def default_model(self, task: str) -> str | None:
        # on ZeroGPU the main process runs on the CPU but every request's model runs on the GPU
        return default_model(self.specs, task, device="cuda" if zerogpu.active() else self.config.device)

    def warm_defaults(self) -> threading.Thread:
        """Load each tab's default model in a background thread (start-up), so the first request finds it loaded;
        with backend "auto" its fastest runtime is then prepared in the background too. Returns the thread."""
        return self.cache.warm(i for i in map(self.default_model, TASKS) if i is not None)

    def load(self, task: str | tuple[str, ...], model: str | None, weights_file: str | None = None) -> Translator:
        """Load the model a request names, in this process, and return its translator: on ZeroGPU the main process
        does this before reserving a GPU (`zerogpu.gpu(prepare=...)`), so downloads and refusals happen here, and
        the same one-line errors reach the client."""
        with _user_errors(_named(model, weights_file)), self.cache.use(self._spec(model, task, weights_file)) as t:
            return t

    def _spec(self, model: str | None, task: str | tuple[str, ...], weights_file: str | None,
              request: gr.Request | None = None) -> ModelSpec:
        """The spec `model` names: an offered id, a Hub id, or (model "custom") the uploaded `weights_file` (the file
        drop's file_types refuse other suffixes). Visitors' text never reaches this machine's files; uploads are
        local. A custom id is listed in this visitor's /models only (`request`'s session); an upload that cannot be
        used is deleted at once."""
        if model is not None and not isinstance(model, str):
            raise gr.Error(f"model must be a model id (text), not {type(model).__name__}")
        if model == CUSTOM_CHOICE:
            if not self.config.custom_models:
                self.cache.spec(CUSTOM_CHOICE)  # raises the switched-off message
            if not weights_file or not isinstance(weights_file, str):
                raise gr.Error("Custom model: type a Hub id (owner/name[/file.pth][@revision][#network]) or drop a "
                               "weights file")
            self._remember(request, weights_file)
            try:
                spec = self.cache.spec(weights_file, allow_local=True)
            except GanModelsError:
                Path(weights_file).unlink(missing_ok=True)  # nobody may fetch a refused upload afterwards
                raise
        else:
            if model and model not in self.specs:
                self._remember(request, model)
            spec = self.cache.spec(model or "")
        if spec.task not in ((task,) if isinstance(task, str) else task):
            offered = ", ".join(i for _, i in self.choices(task) if i != CUSTOM_CHOICE)
            task = task if isinstance(task, str) else " or ".join(task)
            article = "an" if spec.task[0] in "aeiou" else "a"
            raise gr.Error(f"{shown(spec.id)} is {article} {spec.task} model, not for {task}; choose one of: {offered}"
                           + (f", or a custom {task} model" if self.config.custom_models else ""))
        return spec

    @contextmanager
    def _model(self, model: str | None, task: str | tuple[str, ...], progress: gr.Progress,
               weights_file: str | None = None, request: gr.Request | None = None) -> Iterator[Translator]:
        """The translator `model` names (see `_spec`), held loaded for the block and pinned to its current backend
        for the request; inside a ZeroGPU call, on the GPU."""
        spec = self._spec(model, task, weights_file, request)
        progress(0, desc=f"Loading {spec.title}")
        with self.cache.use(spec) as translator, serving():  # background preparation pauses meanwhile
            yield zerogpu.on_device(translator).pinned()

    def _remember(self, request: gr.Request | None, model_id: str) -> None:
        """Note that this visitor's session tried custom `model_id` (its /models lists it; no one else's does)."""
        session = _session(request)
        with self._sessions_lock:
            ids = self._sessions.setdefault(session, OrderedDict())
            self._sessions.move_to_end(session)
            ids[model_id] = None
            ids.move_to_end(model_id)
            while len(ids) > CUSTOM_ROWS_KEPT:
                ids.popitem(last=False)
            while len(self._sessions) > SESSIONS_KEPT:
                self._sessions.popitem(last=False)

    def _visible(self, request: gr.Request | None) -> set[str]:
        with self._sessions_lock:
            return set(self._sessions.get(_session(request), ()))

    def _plan(self, translator: Translator, img: Image.Image, tile: Any, outscale: float | None = None) -> Any:
        """The tile this request runs with so that it stays within the per-request memory budget (or a refusal:
        budget.OverBudgetError, before any work)."""
        w, h = img.size
        return budget.check_request(translator.spec, h, w, tile=tile, outscale=outscale,
                                    budget_mb=self.config.request_memory_mb,
                                    module=getattr(translator.backend, "model", None),
                                    auto_budget_mb=self.config.tile_budget_mb).tile

    def _info(self, requested: str, translator: Translator, seconds: float, result: Image.Image) -> str:
        return redact(info_line(translator, seconds, result,
                         requested=translator.spec.id if requested == CUSTOM_CHOICE else requested))  # upload: file

    # --- handlers (their names and docstrings are the API and MCP descriptions) -----------------------------------
    # Gradio reads the first line of each argument only (and each Returns line as one item): keep them one line.

    @_one_line
    def style_transfer(
        self, image: str | None, style: str, output_size: str = "original", weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(), request: gr.Request = None,  # type: ignore[assignment]
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
                                                                            weights_file, request) as translator:
            start = time.perf_counter()
            img = imaging.load_image(image, max_pixels=self.config.max_input_pixels)
            if output_size in (None, "", "original"):
                img = fit_long_side(img, self.config.max_style_side)
            elif str(output_size).isdigit():
                img = resize_short_side(img, int(output_size))
            else:
                raise gr.Error(f"output_size must be original, 512 or 256, not {output_size!r}")
            result = translator(img, tile=self._plan(translator, img, "auto"), progress=_progress_callback(progress))
            seconds = time.perf_counter() - start
        preview = self.files.write(for_display(result), f"{Path(str(image)).stem}_{file_safe_name(translator.spec.id)}")
        return preview, self._info(style, translator, seconds, result)

    @_one_line
    def sketch_to_photo(
        self, sketch: dict | None, model: str, fit_to_model: bool = True, weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(), request: gr.Request = None,  # type: ignore[assignment]
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
            with self._model(model, "sketch2photo", progress, weights_file, request) as translator:
                start = time.perf_counter()
                size = translator.spec.input_size
                if fit_to_model and size:
                    img = resize_short_side(img.convert("RGB"), size)
                result = translator(img, tile=self._plan(translator, img, "auto"),
                                    progress=_progress_callback(progress))
                seconds = time.perf_counter() - start
        preview = self.files.write(for_display(result), f"sketch_{file_safe_name(translator.spec.id)}")
        return preview, self._info(model, translator, seconds, result)

    @_one_line
    def edges_from_photo(self, photo: str | None, model: str) -> dict:
        """The edge map the sketch models were trained on, from a photo, placed on the canvas."""
        if photo is None:
            raise gr.Error("Upload a photo to turn into an edge map")
        with _user_errors(model):
            size = self.cache.spec(model).input_size if model in self.specs else None
            edges = imaging.edges_from_photo(imaging.load_image(photo, max_pixels=self.config.max_input_pixels),
                                             size=size)
        return {"background": edges, "layers": [], "composite": None}

    @_one_line
    def upscale(
        self,
        image: str | None,
        model: str,
        outscale: int = 4,
        tile: str = "auto",
        weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(),
        request: gr.Request = None,  # type: ignore[assignment]
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
        scale = _outscale(outscale, "1, 2, 3 or 4")
        if not 1 <= scale <= 8:
            raise gr.Error(f"outscale must be between 1 and 8, not {outscale}")
        with _user_errors():
            tile_arg = parse_tile(tile)
        named = _named(model, weights_file)
        with _user_errors(named, _upload(model, weights_file)), self._model(model, "upscale", progress,
                                                                             weights_file, request) as translator:
            start = time.perf_counter()
            source = imaging.load_image(image, max_pixels=self.config.max_upscale_pixels)
            tile_arg = self._plan(translator, source, tile_arg, scale)
            result = translator(source, tile=tile_arg, outscale=scale, progress=_progress_callback(progress),
                                max_pixels=self.config.max_upscale_pixels)
            seconds = time.perf_counter() - start
            path = self.files.write(result, f"{Path(str(image)).stem}_x{scale:g}")
        after = fit_long_side(for_display(result), self.config.preview_side)
        before = resized(for_display(source), after.size)
        previews = (self.files.write(before, "before"), self.files.write(after, "after"))
        return previews, path, self._info(model, translator, seconds, result)

    def video(
        self,
        video: str | None,
        model: str,
        outscale: int = 4,
        reduce_flicker: bool = True,
        weights_file: str | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[tuple[Any, str]]:
        """Restyle or upscale every frame of a video clip; the result is an H.264 MP4 with the clip's audio.

        Args:
            video: the clip (MP4, WebM, MOV, MKV or animated GIF; at most GAN_STUDIO_MAX_VIDEO_SECONDS long).
            model: a style or upscale model id (see the models tool), a Hugging Face Hub id, or "custom".
            outscale: 2, 3 or 4 (an integer), upscalers only; a style model keeps the frame size and ignores it.
            reduce_flicker: blend each frame with the previous result moved along the optical flow (style models).
            weights_file: a generator weights file (.safetensors, .pth, ...), used when `model` is "custom".

        Returns:
            The MP4 (same frame count, rate and timestamps as the clip; even frame size) and an info line.
        """
        if video is None:
            raise gr.Error("Upload a video first")
        scale = _outscale(outscale, "2, 3 or 4")
        with _user_errors(_named(model, weights_file)), \
                self._model(model, ("style", "upscale"), progress, weights_file) as translator:
            upscaler = translator.spec.task == "upscale"
            path = self.files.path(f"{Path(str(video)).stem}_{file_safe_name(translator.spec.id)}", ".mp4")
            for step in iter_translate_video(
                translator, video, path, outscale=scale, reduce_flicker=bool(reduce_flicker),
                max_seconds=self.config.max_video_seconds, max_side=self.config.max_style_side,
                max_pixels=self.config.max_upscale_pixels if upscaler else self.config.max_input_pixels,
            ):
                if isinstance(step, VideoResult):
                    result = step
                    break
                eta = "" if step.eta_s is None else f", about {step.eta_s:.0f} s left"
                progress((step.frames, step.total), desc=f"{step.fps:.2f} frames/s{eta}", unit="frames")
                yield gr.skip(), f"{step.frames} frames done ({step.fps:.2f} frames/s{eta})"
        backend = translator.backend
        runtime = backend.name if backend.precision == "fp32" else f"{backend.name} {backend.precision}"
        line = f"**{translator.spec.title}** (`{shown(translator.spec.id)}`) · {runtime} · {result.summary()}"
        if translator.fallback_reason is not None:
            line += f"\n\n⚠️ {translator.fallback_reason}"
        yield str(result.path), line

    @_one_line
    def models(self, request: gr.Request = None) -> list[dict[str, Any]]:  # type: ignore[assignment]
        """Every model the app offers, then the custom models this visitor tried lately: id, title, task, custom,
        family, arch, bundled, available, status, hub repo, licence. Custom rows say what was detected ("family",
        "arch"); one that could not be resolved has only its id, "available": false and the reason.

        Returns:
            A JSON list; "available" is false for models whose weights failed to load (the reason is in "status").
        """
        rows = [{**row, "status": redact(row["status"])}
                for row in model_rows(self.cache, visible=self._visible(request))]
        for row in rows:  # on ZeroGPU: what the last GPU call with this model did
            if (run := self.gpu_runs.last_run(row["id"])) is not None:
                row["status"] = f"{row['status']} · {run.describe()}"
        return rows

    def runtime(self) -> str:
        """Backend and device in use, for the Settings panel."""
        summary = runtime_summary(self.config, self.specs, upload_mb=upload_weights_mb(self.config))
        return summary + (f" · **ZeroGPU:** {zerogpu.describe(self.gpu_runs)}" if zerogpu.active() else "")


def _outscale(value: Any, allowed: str) -> float:
    """The output scale an API caller sent, as a number; anything else is one line naming the allowed values."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"outscale must be {allowed}, not {value!r}") from None


def _session(request: gr.Request | None) -> str:
    """The visitor's Gradio session (one per browser tab or API client); "" for direct calls (tests, scripts)."""
    return str(getattr(request, "session_hash", None) or "")


def _named(model: str | None, weights_file: str | None) -> str | None:
    """What a request's model is called in messages: the uploaded file's name for the custom entry."""
    return shown(str(weights_file)) if model == CUSTOM_CHOICE and weights_file else model


def _upload(model: str | None, weights_file: str | None) -> str | None:
    """The uploaded weights file's server path when the request uses it, else None."""
    return str(weights_file) if model == CUSTOM_CHOICE and weights_file else None


def _examples(rows: list[list[Any]]) -> list[list[Any]]:
    """Example rows whose files exist (a checkout without examples/ still starts); paths as strings."""
    kept = [row for row in rows if all(v is not None and (not isinstance(v, Path) or v.is_file()) for v in row)]
    return [[str(v) if isinstance(v, Path) else v for v in row] for row in kept]


def _canvas_example(path: Path) -> dict[str, Any] | None:
    """A sketch file as a canvas value (the upload becomes the canvas background)."""
    return {"background": str(path), "layers": [], "composite": str(path)} if path.is_file() else None


def _model_picker(studio: Studio, task: str | tuple[str, ...], *, label: str, prefix: str
                  ) -> tuple[gr.Dropdown, gr.File]:
    """A tab's model dropdown and, behind its "Custom model…" entry, a Hub id field and a weights-file drop.

    The dropdown accepts any value, so API callers pass a Hub id as `model`; in the browser the id field's events
    put the typed id in the dropdown (a dropped file puts "custom" back: the file wins, as the handler's
    `weights_file` argument). The custom fields stay shown while the dropdown holds anything but an offered id.
    """
    offered = {i for _, i in studio.choices(task) if i != CUSTOM_CHOICE}
    first = task if isinstance(task, str) else task[0]
    dropdown = ModelDropdown(studio.choices(task), value=studio.default_model(first), label=label,
                             allow_custom_value=True, elem_id=f"{prefix}-model")
    with gr.Group(visible=False) as group:
        typed = gr.Textbox(label="Hugging Face Hub model id or https URL", max_lines=1, elem_id=f"{prefix}-custom-id",
                           placeholder="owner/name[/file.pth][@revision][#network][?range=0,1] or https://…/file.pth")
        weights = gr.File(label=f"…or drop a weights file (up to {upload_weights_mb(studio.config)} MB)",
                          file_types=list(WEIGHTS_SUFFIXES), type="filepath", height=110,
                          elem_id=f"{prefix}-custom-file")
    if studio.config.custom_models:
        private = {"api_visibility": "private", "queue": False}

        def chosen(choice: str | None, text: str | None, weights_file: str | None) -> tuple[Any, Any]:
            # "Custom model…" picked again with an id still in the field: that id is the model
            value = _custom_model_value(text, weights_file) if choice == CUSTOM_CHOICE else choice
            return gr.Group(visible=bool(choice) and choice not in offered), gr.skip() if value == choice else value

        dropdown.change(chosen, [dropdown, typed, weights], [group, dropdown], **private)
        for event in (typed.change, typed.submit, weights.change):
            event(_custom_model_value, [typed, weights], dropdown, **private)
    return dropdown, weights


def _custom_model_value(text: str | None, weights_file: str | None) -> str:
    """The model dropdown's value from the custom fields: the typed id, or "custom" (a dropped file, or nothing)."""
    text = (text or "").strip()
    return CUSTOM_CHOICE if weights_file or not text else text


def build_demo(*, specs: Mapping[str, ModelSpec] | None = None, config: Settings | None = None,
               warm: bool = False) -> gr.Blocks:
    """The whole app: three task tabs and a Settings panel; the queue is set up here with explicit concurrency.

    Parameters:
        specs: models to offer (default: gan_models.SPECS); tests pass tiny local models.
        config: runtime settings (default: Settings.from_env()).
        warm: load each tab's default model in the background now (`python app.py` does; building stays instant).
    """
    config = config or Settings.from_env()
    default_preparer().max_cache_mb = config.onnx_cache_mb
    studio = Studio(specs=SPECS if specs is None else specs, config=config)
    if warm:
        studio.warm_defaults()
    heavy = {"concurrency_id": "model", "concurrency_limit": config.concurrency}
    # On ZeroGPU each handler's model is loaded (on the CPU) before the GPU is reserved, then sized from its own
    # network for the reservation; the call's record comes back into studio.gpu_runs.
    durations = zerogpu.gpu_durations(studio.cache.known_specs(), max_style_side=config.max_style_side,
                                      preview_side=config.preview_side, ledger=studio.gpu_runs)

    def on_gpu(handler: Callable[..., Any], task: str, model_arg: str) -> Callable[..., Any]:
        return zerogpu.gpu(handler, duration=durations[handler.__name__], ledger=studio.gpu_runs,
                           prepare=lambda **args: studio.load(task, args[model_arg], args["weights_file"]))

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

            with gr.Tab("Video", id="video"):
                with gr.Row():
                    with gr.Column():
                        video_in = gr.Video(label=f"Clip (up to {config.max_video_seconds:g} s)", sources=["upload"],
                                            elem_id="video-input")
                        video_model, video_weights = _model_picker(studio, ("style", "upscale"), label="Model",
                                                                   prefix="video")
                        with gr.Row():
                            video_scale = IntegerRadio([2, 3, 4], value=4, label="Output scale (upscalers)")
                            video_flicker = gr.Checkbox(True, label="Reduce flicker")
                        video_btn = gr.Button("Process video", variant="primary", elem_id="video-run")
                    with gr.Column():
                        video_out = gr.Video(label="Result", interactive=False, elem_id="video-output")
                        video_info = gr.Markdown(elem_id="video-info")

        with gr.Accordion("Settings and models", open=False):
            runtime_md = gr.Markdown()
            models_md = gr.Markdown()
            models_btn = gr.Button("Refresh model list", size="sm")
            with gr.Accordion("/models as JSON", open=False):
                models_json = gr.JSON(label="Models")

        style_btn.click(on_gpu(studio.style_transfer, "style", "style"),
                        [style_in, style_model, style_size, style_weights], [style_out, style_info],
                        api_name="style_transfer", **heavy)
        sketch_btn.click(on_gpu(studio.sketch_to_photo, "sketch2photo", "model"),
                         [canvas, sketch_model, sketch_fit, sketch_weights], [sketch_out, sketch_info],
                         api_name="sketch_to_photo", **heavy)
        edge_btn.click(studio.edges_from_photo, [edge_photo, sketch_model], canvas, api_name="edges_from_photo",
                       **light)
        up_btn.click(on_gpu(studio.upscale, "upscale", "model"),
                     [up_in, up_model, up_scale, up_tile, up_weights], [up_slider, up_file, up_info],
                     api_name="upscale", **heavy)
        video_btn.click(studio.video,  # a generator, not a ZeroGPU call: on ZeroGPU the video tab runs on the CPU
                        [video_in, video_model, video_scale, video_flicker, video_weights], [video_out, video_info],
                        api_name="video", **heavy)
        # flicker reduction is for style models; an upscaler's default is frame by frame
        video_model.change(lambda m: gr.Checkbox(value=studio.specs.get(m) is None
                                                 or studio.specs[m].task != "upscale"),
                           video_model, video_flicker, api_visibility="private", queue=False)
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
    if overrides := zerogpu.overrides():
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

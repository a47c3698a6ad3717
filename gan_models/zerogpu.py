"""ZeroGPU: CUDA only inside `@spaces.GPU` calls, and what those calls learn brought back to the main process.

On a ZeroGPU Space the `spaces` package patches torch in the main thread at import: CUDA exists only inside a
`@spaces.GPU` call, which runs in a forked worker process. So (see docs/deployment.md):

- the main process loads every model on the CPU: the start-up warm-up (a background thread, where ZeroGPU's CUDA
  emulation does not reach) and, before each GPU call, the model the request names (`gpu(prepare=...)`: Hub
  downloads and custom-model detection happen here, outside GPU time; a refusal is the same one-line error as on
  the CPU and costs no GPU reservation);
- inside the call, `on_device` moves that CPU model to CUDA in place, once per worker, and keeps the CUDA copy while
  the worker lives (ZeroGPU keeps an idle worker, and its memory, for the next call on the same GPU);
- the call returns a `GpuRun` record beside its result; the main process keeps the last one per model in a
  `GpuLedger`, which /models, the Settings panel and the duration function read.

The duration function reserves GPU time from the network's FLOPs (counted on the meta device, from the very network
that was loaded, custom ones included), the weights' transfer to the GPU and the PNG encoding of the result, all
inside the call. Its constants are estimates: no GPU was lent when they were written (see GPU_EFFECTIVE_TFLOPS).
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import logging
import math
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import first_line
from .settings import zero_gpu
from .specs import ModelSpec

logger = logging.getLogger(__name__)

# The device a GPU call runs on (tests emulating ZeroGPU on a machine without CUDA set "cpu").
DEVICE = "cuda"

# --- GPU time per call: estimates, not measurements (no GPU was lent when these were written) ---------------------
# Reserved when the image or the model is unknown (the request then fails fast, or the model is sized next time).
GPU_BASE_S = 30
# ZeroGPU refuses longer reservations for most visitors; a shorter one gets a place in its queue sooner.
GPU_MAX_S = 120
# A call's fixed cost: forking the worker, CUDA context, ZeroGPU moving its packed tensors, cuDNN picking kernels
# for the first shapes, reading the input image. Estimate.
GPU_START_S = 10.0
# Effective fp32 convolution rate of a ZeroGPU slice (an H200 MIG 3g: ~60 SMs), well under its peak. Estimate.
GPU_EFFECTIVE_TFLOPS = 10.0
# Margin on the compute estimate (tiling overlap, memory-bound layers, a busy node).
GPU_COMPUTE_MARGIN = 2.0
# Host-to-GPU copy of the weights from pageable memory, once per worker (PCIe 4/5 pinned reaches 20+ GB/s).
# Estimate.
HOST_TO_DEVICE_BYTES_PER_S = 4e9
# Encoding the result PNG (zlib level 6) on the Space's CPU, inside the call. Measured on this CPU, busy (2 cores
# shared by 8 engineers, AMD EPYC Zen 4), with `python -m bench.png_encode`: 0.31 s/MP at 4 MP, 0.17 at 16 MP,
# 0.10 at 64 MP (RGB 8-bit); the largest is kept as the margin for a slower Space CPU.
PNG_ENCODE_S_PER_MP = 0.31


# --- the spaces package ---------------------------------------------------------------------------------------------

_refused = threading.Event()


def spaces_module() -> ModuleType | None:
    """The `spaces` package, or None when it is missing or refuses to start.

    `SPACES_ZERO_GPU=true` without `SPACES_ZERO_DEVICE_API_URL` (a copy of a ZeroGPU Space's settings elsewhere)
    makes `import spaces` raise AssertionError: that is logged once, in one line, not tried again, and the app runs
    without ZeroGPU.
    """
    if _refused.is_set():
        return None
    try:
        import spaces
    except ImportError:
        return None
    except AssertionError as exc:
        _refused.set()
        logger.warning("ZeroGPU off: the spaces package refused to start (%s); running without it", first_line(exc))
        return None
    return spaces


def active() -> bool:
    """The `spaces` package is importable and this process runs on a ZeroGPU Space.

    The package's own `spaces.config.Config.zero_gpu` decides (it reads SPACES_ZERO_GPU, which ZeroGPU Spaces set);
    an older package without it falls back to that variable. Importing `spaces` here, before anything touches CUDA,
    is also what ZeroGPU asks for, so call this early (app.py's main()).
    """
    spaces = spaces_module()
    if spaces is None:
        return False
    flag = getattr(getattr(getattr(spaces, "config", None), "Config", None), "zero_gpu", None)
    if isinstance(flag, bool):
        return flag
    return zero_gpu()


def overrides() -> dict[str, str]:
    """Settings for the main process on ZeroGPU: PyTorch on the CPU (the GPU exists only inside calls, where
    `on_device` moves each model to CUDA; onnxruntime's CUDA provider cannot use a ZeroGPU device); empty
    elsewhere."""
    return {"backend": "torch", "device": "cpu"} if active() else {}


# --- what a GPU call learns ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuRun:
    """What one GPU call did, sent back to the main process beside the result (plain, picklable data).

    Parameters:
        handler: the handler's name ("upscale", ...).
        model: id of the model that ran (None when the call failed before one was loaded).
        device: where it ran.
        moved_s: seconds spent moving the weights to the device in this call; None: already there (a warm worker).
        seconds: the whole call, in the worker.
        error: the one-line error the client got, or None.
        worker: the worker's process id.
    """

    handler: str
    model: str | None
    device: str
    moved_s: float | None
    seconds: float
    error: str | None
    worker: int

    def describe(self) -> str:
        """One line for the Settings panel."""
        where = f"{self.seconds:.2f} s on {self.device}"
        if self.moved_s is not None:
            where += f", weights moved in {self.moved_s:.2f} s"
        return f"last GPU call failed ({where}): {self.error}" if self.error else f"last GPU call: {where}"


@dataclass(frozen=True)
class NetworkSize:
    """What the duration function needs to know about a network: its FLOPs per output pixel and weights bytes."""

    flops_per_output_pixel: float
    weight_bytes: int


class GpuLedger:
    """The main process's record of GPU calls (the last per model) and of the networks it loaded (their size).

    Thread-safe: requests run concurrently.
    """

    def __init__(self) -> None:
        self._runs: dict[str, GpuRun] = {}
        self._sizes: dict[str, NetworkSize] = {}
        self._calls = 0
        self._guard = threading.Lock()

    def record(self, run: GpuRun) -> None:
        with self._guard:
            self._calls += 1
            if run.model is not None:
                self._runs[run.model] = run

    def last_run(self, model_id: str) -> GpuRun | None:
        with self._guard:
            return self._runs.get(model_id)

    @property
    def calls(self) -> int:
        with self._guard:
            return self._calls

    def learn(self, model_id: str, module: Any, spec: ModelSpec) -> NetworkSize | None:
        """Size `module` (the network loaded for `model_id`) once; None when it cannot be counted."""
        with self._guard:
            if model_id in self._sizes:
                return self._sizes[model_id]
        size = network_size(module, spec)
        if size is not None:
            with self._guard:
                self._sizes[model_id] = size
        return size

    def size(self, model_id: str) -> NetworkSize | None:
        with self._guard:
            return self._sizes.get(model_id)


@dataclass
class _CallLog:
    device: str
    model: str | None = None
    moved_s: float | None = None


_CALL: contextvars.ContextVar[_CallLog | None] = contextvars.ContextVar("zerogpu_call", default=None)
# CPU translator -> its copy on the device, in a GPU worker; lives as long as the worker (and the CPU translator)
_ON_DEVICE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_on_device_lock = threading.Lock()


def on_device(translator: Any) -> Any:
    """Inside a GPU call: `translator` on the GPU (its network moved there in place on first use in this worker,
    then reused while the worker lives). Outside a call, or for a translator that is not a PyTorch one: itself.
    """
    log = _CALL.get()
    model = getattr(translator.backend, "model", None)
    if log is None or model is None:
        return translator
    log.model = translator.spec.id
    with _on_device_lock:
        twin = _ON_DEVICE.get(translator)
        if twin is None:
            from .pipeline import Translator
            from .runtimes import TorchBackend

            start = time.perf_counter()
            backend = TorchBackend(model, device=log.device)
            twin = Translator(translator.spec, backend, source=translator.source,
                              fallback_reason=translator.fallback_reason,
                              tile_budget_mb=translator.tile_budget_mb)
            _ON_DEVICE[translator] = twin
            log.moved_s = time.perf_counter() - start
    return twin


@dataclass(frozen=True)
class _Outcome:
    value: Any
    error: BaseException | None
    run: GpuRun


def _error_line(exc: BaseException) -> str:
    """The line the client sees: a UI error's own message (gr.Error's str() is quoted), else the first line."""
    message = getattr(exc, "message", None)
    return first_line(Exception(message)) if isinstance(message, str) and message else first_line(exc)


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.dumps(exc)
    except Exception:  # any failure to pickle: let the spaces package report it its own way
        return False
    return True


def _in_worker(fn: Callable[..., Any]) -> Callable[..., _Outcome]:
    """`fn` as run inside the GPU call: its result or its error, with the GpuRun record."""

    @functools.wraps(fn)
    def run_on_gpu(*args: Any, **kwargs: Any) -> _Outcome:
        log = _CallLog(device=DEVICE)
        token = _CALL.set(log)
        start = time.perf_counter()
        value, error = None, None
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            if not _picklable(exc):
                raise
            error = exc
        finally:
            _CALL.reset(token)
        run = GpuRun(handler=fn.__name__, model=log.model, device=log.device, moved_s=log.moved_s,
                     seconds=time.perf_counter() - start, error=_error_line(error) if error else None,
                     worker=os.getpid())
        return _Outcome(value, error, run)

    return run_on_gpu


def gpu(
    fn: Callable[..., Any],
    *,
    duration: int | Callable[..., int],
    prepare: Callable[..., Any] | None = None,
    ledger: GpuLedger | None = None,
) -> Callable[..., Any]:
    """`fn` run in a `@spaces.GPU` call on ZeroGPU; `fn` itself anywhere else (no `spaces` package needed).

    Parameters:
        duration: GPU seconds to reserve per call, or a function of the handler's own arguments that returns it
            (see `gpu_durations`); ZeroGPU calls it in the main process, after `prepare`.
        prepare: called in the main process first with the handler's arguments by name (defaults filled in), to
            load the model the request names on the CPU; it returns that CPU translator (sized into `ledger`) or
            None, and raises the request's one-line error, before any GPU is reserved.
        ledger: where the GpuRun of each call and the sizes of prepared networks are kept.
    """
    if not active():
        return fn
    decorated = spaces_module().GPU(_in_worker(fn), duration=duration)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        if prepare is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            translator = prepare(**bound.arguments)
            module = getattr(getattr(translator, "backend", None), "model", None)
            if ledger is not None and module is not None:
                ledger.learn(translator.spec.id, module, translator.spec)
        outcome = decorated(*args, **kwargs)
        if ledger is not None:
            ledger.record(outcome.run)
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    return handler


# --- how long a call takes -------------------------------------------------------------------------------------------


def network_size(module: Any, spec: ModelSpec) -> NetworkSize | None:
    """FLOPs per output pixel and weights bytes of a loaded network, counted on a copy of it on the meta device
    (its weights become empty meta tensors: nothing is computed or copied, and the network itself, which other
    threads may be running or a GPU worker may be forking, is not touched). None when it cannot run on meta."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [*module.parameters(), *module.buffers()]
    weight_bytes = sum(t.numel() * t.element_size() for t in tensors)
    convs = [t for t in tensors if t.ndim == 4]
    channels = convs[0].shape[1] if convs else 3
    side = -(-256 // spec.size_multiple) * spec.size_multiple  # deep U-Nets need 256 px (8 downsamplings)
    meta: dict[int, Any] = {id(t): torch.nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad)
                            if isinstance(t, torch.nn.Parameter) else torch.empty_like(t, device="meta")
                            for t in tensors}
    try:
        clone = copy.deepcopy(module, meta)
        x = torch.empty(1, channels, side, side, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            y = clone(x)
    except Exception as exc:  # an estimate must never fail the request it is for
        logger.info("cannot count the FLOPs of %s on the meta device: %s", spec.id, first_line(exc))
        return None
    return NetworkSize(counter.get_total_flops() / (y.shape[-2] * y.shape[-1]), weight_bytes)


def spec_network_size(spec: ModelSpec) -> NetworkSize | None:
    """`network_size` of the network a spec describes, built on the meta device from its architecture (no weights
    read); None for a network whose shape only its checkpoint knows (spandrel's)."""
    return _spec_network_size(spec.arch, tuple(sorted(spec.arch_kwargs.items())), spec.size_multiple, spec.id)


@functools.lru_cache(maxsize=64)
def _spec_network_size(arch: str, kwargs: tuple[tuple[str, Any], ...], multiple: int, spec_id: str
                       ) -> NetworkSize | None:
    import torch

    from .archs import build_arch

    try:
        with torch.device("meta"):
            module = build_arch(arch, **dict(kwargs))
    except Exception as exc:
        logger.info("cannot build %s on the meta device: %s", spec_id, first_line(exc))
        return None
    probe = ModelSpec(id=spec_id, title=spec_id, task="upscale", arch=arch, size_multiple=multiple)
    return network_size(module, probe)


def gpu_seconds(spec: ModelSpec | None, output_pixels: int | None, *, size: NetworkSize | None = None,
                encoded_pixels: int | None = None) -> int:
    """Seconds of ZeroGPU time to reserve for one run of `spec` producing `output_pixels` (None: unknown).

    GPU_START_S + weights bytes / HOST_TO_DEVICE_BYTES_PER_S + GPU_COMPUTE_MARGIN x FLOPs / GPU_EFFECTIVE_TFLOPS
    + PNG_ENCODE_S_PER_MP x `encoded_pixels` (default: the output), capped at GPU_MAX_S. `size` is the loaded
    network's (`GpuLedger.learn`); without it the spec's architecture is counted.
    """
    if spec is None or not output_pixels:
        return GPU_BASE_S
    size = size or spec_network_size(spec)
    if size is None:
        return GPU_MAX_S // 2  # a network that cannot be counted: a generous reservation
    compute = GPU_COMPUTE_MARGIN * size.flops_per_output_pixel * output_pixels / (GPU_EFFECTIVE_TFLOPS * 1e12)
    transfer = size.weight_bytes / HOST_TO_DEVICE_BYTES_PER_S
    encode = PNG_ENCODE_S_PER_MP * (output_pixels if encoded_pixels is None else encoded_pixels) / 1e6
    return int(min(GPU_MAX_S, math.ceil(GPU_START_S + transfer + compute + encode)))


def _image_size(value: Any) -> tuple[int, int] | None:
    """(width, height) of a handler's image argument: a file path, a PIL image or a canvas dict; None if unknown."""
    from PIL import Image

    if isinstance(value, dict):
        return _image_size(value.get("composite")) or _image_size(value.get("background"))
    if isinstance(value, Image.Image):
        return value.size
    if isinstance(value, (str, Path)):
        try:
            with Image.open(value) as img:  # reads the header only
                return img.size
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
    return None


def _short_side_to(size: tuple[int, int], side: int, *, max_ratio: float | None = None) -> int:
    w, h = size
    scale = side / min(w, h)
    long_side = max(w, h) * scale
    if max_ratio is not None:
        long_side = min(long_side, side * max_ratio)
    return int(side * long_side)


def _preview_pixels(pixels: int, side: int) -> int:
    """Pixels of a preview whose long side is capped at `side` (at most side², for a square)."""
    return min(pixels, side * side)


def gpu_durations(specs: Mapping[str, ModelSpec], *, max_style_side: int, preview_side: int = 2048,
                  ledger: GpuLedger | None = None) -> dict[str, Callable[..., int]]:
    """Duration functions for app.py's model handlers, keyed by handler name; each takes the handler's arguments.

    Parameters:
        specs: the app's models (a model id argument is looked up here; an upload by its `weights_file`).
        max_style_side: the app's long-side cap for "original" style output.
        preview_side: the long side of the upscale tab's before/after previews (two more PNGs per call).
        ledger: the sizes of the networks `gpu(prepare=...)` loaded; without one, specs are sized by architecture.
    """

    def model(model_id: Any, weights_file: Any) -> tuple[ModelSpec | None, NetworkSize | None]:
        spec = specs.get(str(model_id)) or (specs.get(str(weights_file)) if weights_file else None)
        return spec, (ledger.size(spec.id) if ledger is not None and spec is not None else None)

    def style_transfer(image: Any = None, style: str = "", output_size: str = "original",
                       weights_file: Any = None, *_: Any, **__: Any) -> int:
        (spec, known), size = model(style, weights_file), _image_size(image)
        if size is None:
            return gpu_seconds(spec, None)
        if str(output_size).isdigit():
            pixels = _short_side_to(size, int(output_size))
        else:
            ratio = min(1.0, max_style_side / max(size))
            pixels = int(size[0] * ratio) * int(size[1] * ratio)
        return gpu_seconds(spec, pixels, size=known)

    def sketch_to_photo(sketch: Any = None, model_id: str = "", fit_to_model: bool = True,
                        weights_file: Any = None, *_: Any, **__: Any) -> int:
        (spec, known), size = model(model_id, weights_file), _image_size(sketch)
        if size is None or spec is None:
            return gpu_seconds(spec, None)
        pixels = _short_side_to(size, spec.input_size, max_ratio=4) if fit_to_model and spec.input_size \
            else size[0] * size[1]
        return gpu_seconds(spec, pixels, size=known)

    def upscale(image: Any = None, model_id: str = "", outscale: Any = 4, tile: Any = "auto",
                weights_file: Any = None, *_: Any, **__: Any) -> int:
        (spec, known), size = model(model_id, weights_file), _image_size(image)
        if size is None or spec is None:
            return gpu_seconds(spec, None)
        pixels = size[0] * size[1] * spec.scale ** 2  # the network's output, before resizing to outscale
        try:
            result = int(size[0] * size[1] * float(outscale) ** 2)
        except (TypeError, ValueError):  # the handler refuses it; reserve as for the network's own scale
            result = pixels
        # the full-size PNG, then the before/after previews
        encoded = result + 2 * _preview_pixels(result, preview_side)
        return gpu_seconds(spec, pixels, size=known, encoded_pixels=encoded)

    return {"style_transfer": style_transfer, "sketch_to_photo": sketch_to_photo, "upscale": upscale}


def describe(ledger: GpuLedger) -> str:
    """The Settings panel's ZeroGPU line."""
    return (f"on: models load on the CPU, each call moves its model to {DEVICE} "
            f"({ledger.calls} GPU call{'s' if ledger.calls != 1 else ''} so far)")


"""Runtimes: how a network runs (torch, onnxruntime, ...), and the choice between them, owned by the library.

    base.py                 Backend protocol, BackendSlot, BuildOnce, resolve_device (BackendOutOfMemory: errors)
    torch_backend.py        TorchBackend (the reference, and what a Translator starts on)
    onnxruntime_backend.py  OnnxBackend and its session cache
    onnx_export.py          export, int8 recipe, parity check, sidecars, the export cache folder
    registry.py             RUNTIMES (a literal dict of Runtime records) and Artifacts (module + exported graphs)
    tournament.py           judge every (runtime, precision) on held-out images, time them, record the choice
    worker.py               background preparation: a Translator answers on torch and switches when ready
    malloc.py               tune_malloc(), called once by entry points

`backend_for` below is what `translator_for` uses: a runtime by name, or "auto" (the tournament's choice).
"""

from __future__ import annotations

import logging

from ..errors import GanModelsError
from ..settings import ENV, forced_backend
from ..specs import ModelSpec
from ..weights import LoadedModel
from .activity import serving, yield_to_requests
from .base import Backend, BackendOutOfMemory, BackendSlot, resolve_device
from .malloc import tune_malloc
from .onnx_export import cache_dir
from .onnxruntime_backend import OnnxBackend, clear_session_cache, import_onnxruntime
from .registry import ALIASES, BACKENDS, RUNTIMES, Artifacts, Runtime, get_runtime
from .torch_backend import TorchBackend
from .tournament import Outcome, recorded_choice, run_tournament
from .worker import Job, Preparer, default_preparer, prepare_in_background, warm

logger = logging.getLogger(__name__)

# Forces one backend for the whole process (e.g. test runs with many throw-away models that should not be exported).
BACKEND_ENV = ENV["backend"]

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "RUNTIMES",
    "Artifacts",
    "Backend",
    "BackendOutOfMemory",
    "BackendSlot",
    "Job",
    "OnnxBackend",
    "Outcome",
    "Preparer",
    "Runtime",
    "TorchBackend",
    "backend_for",
    "cache_dir",
    "clear_session_cache",
    "default_backend",
    "default_preparer",
    "get_runtime",
    "import_onnxruntime",
    "prepare_in_background",
    "recorded_choice",
    "requested_backend",
    "resolve_device",
    "run_tournament",
    "serving",
    "tune_malloc",
    "warm",
    "yield_to_requests",
]


def requested_backend(backend: str, forced: str | None = None) -> str:
    """"auto" or a runtime name for `backend` (aliases resolved); "auto" becomes `forced` if given, else
    GAN_STUDIO_BACKEND's runtime if set (through `settings.forced_backend`).

    Raises:
        GanModelsError: an unknown name, here or in GAN_STUDIO_BACKEND, with the valid choices.
    """
    if backend not in BACKENDS:
        raise GanModelsError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        forced = ((forced if forced is not None else forced_backend()) or "auto").strip().lower()
        if forced not in BACKENDS:
            raise GanModelsError(f"{BACKEND_ENV}={forced!r}; choose one of: {', '.join(BACKENDS)}")
        backend = forced
    return ALIASES.get(backend, backend)


def _device_for(runtime: Runtime, device: str) -> str:
    resolved = resolve_device(device)
    if device == "auto" and resolved == "cuda" and not runtime.precisions("cuda"):
        return "cpu"  # e.g. torch sees a GPU but onnxruntime has no CUDA provider: "auto" still means "what works"
    return resolved


def backend_for(
    loaded: LoadedModel, backend: str = "auto", *, device: str = "auto", threads: int | None = None,
    precision: str | None = None,
) -> Backend:
    """The backend to run `loaded` with, chosen now (this may export and time: background callers use worker.py).

    Parameters:
        backend: "auto" (the tournament over every runtime; torch when it fails, with a logged warning), or a
            runtime name (its fastest precision that keeps PSNR >= 40 dB, or `precision`; errors are raised).
        precision: with a runtime name only: one of the precisions it offers on this device.

    Raises:
        GanModelsError: unknown backend or precision. BackendUnavailableError: the runtime or precision cannot run
            here. OnnxExportError: its graph could not be made, or lost too much quality.
    """
    name = requested_backend(backend)
    if name == "auto":
        resolved = resolve_device(device)
        try:
            outcome = run_tournament(loaded.spec, loaded.module, loaded.source, device=resolved, threads=threads)
        except Exception as exc:  # noqa: BLE001 - "auto" always answers: torch is the fallback for anything
            logger.warning("%s: choosing a runtime failed, using torch: %s", loaded.spec.id, exc)
        else:
            if (outcome.runtime, outcome.precision) != ("torch", "fp32"):
                return outcome.backend
        return TorchBackend(loaded.module, device=resolved, threads=threads)
    runtime = get_runtime(name)
    runtime.require()
    resolved = _device_for(runtime, device)
    if precision is not None and precision not in runtime.offers:
        raise GanModelsError(f"unknown precision {precision!r} for the {name} backend; choose one of: "
                             f"{', '.join(runtime.offers)}")
    if name == "torch":
        return TorchBackend(loaded.module, device=resolved, threads=threads, half=precision == "fp16")
    outcome = run_tournament(loaded.spec, loaded.module, loaded.source, device=resolved, threads=threads,
                             runtimes=(name,), precisions=None if precision is None else (precision,))
    return outcome.backend


def default_backend(spec: ModelSpec, *, device: str = "auto") -> str:
    """The runtime `backend="auto"` runs `spec` on once prepared, as recorded on disk; cheap (one small JSON file).

    GAN_STUDIO_BACKEND's runtime when that is set; "torch" when nothing usable is recorded for the current weights
    file.
    """
    name = requested_backend("auto")
    if name != "auto":
        return name
    choice = recorded_choice(spec, device=resolve_device(device))
    if choice is None or choice["runtime"] not in RUNTIMES or not RUNTIMES[choice["runtime"]].available():
        return "torch"  # nothing recorded, or recorded where a runtime was installed that is gone now
    return choice["runtime"]

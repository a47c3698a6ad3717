"""OpenVINO on CPU: the exported ONNX files compiled by OpenVINO, in fp32, bf16 or (the QDQ file) int8.

Why a second ONNX runtime: onnxruntime has no bf16 Conv kernel, while OpenVINO runs the fp32 file with bf16 math
(`INFERENCE_PRECISION_HINT` bf16) on CPUs with AVX512_BF16/AMX, and its fp32 and int8 convolutions are often faster
too. The files are the ones `export` writes (fp32, and the int8 QDQ file for onnxruntime); nothing is re-exported.

Whether a precision is faster here is measured (python -m bench), never assumed from the CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

import gan_models.runtimes.cpu as cpu  # the module, not the package: no import cycle through __init__

from ..errors import BackendUnavailableError, GanModelsError, first_line
from .base import BackendOutOfMemory, BuildOnce, file_key

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


def import_openvino() -> Any:
    """openvino, or a BackendUnavailableError that says how to get it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            "the openvino backend needs openvino, which is not installed (pip install openvino); "
            "use backend 'torch', 'onnx' or 'auto'"
        ) from exc
    return openvino


def check_precision(precision: str) -> str:
    """`precision` if OpenVINO can run it on this CPU, else a clear error naming the valid choices."""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(
            f"unknown openvino precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and not cpu.has_bf16():
        raise BackendUnavailableError(
            "bf16 needs a CPU with AVX512_BF16 or AMX-BF16 (this one has neither: OpenVINO would emulate bf16, "
            "slower than fp32); use precision 'fp32' or 'int8'")
    return precision


def _config(precision: str, threads: int) -> dict[str, Any]:
    import openvino.properties as props
    import openvino.properties.hint as hints

    ov = import_openvino()
    return {
        hints.performance_mode: hints.PerformanceMode.LATENCY,  # one stream: a request uses every thread
        props.inference_num_threads: threads,
        # Always explicit: on a bf16-capable CPU OpenVINO's default is bf16, so "fp32" must ask for f32. The int8
        # file's float parts (the image convs kept float on purpose) stay f32, as onnxruntime runs them.
        hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
    }


# Compiling is expensive (graph transformations, weight repacking) and a compiled model serves concurrent infer
# requests, so one compiled model per (file version, precision, threads) serves every Translator in the process,
# like onnxruntime's session cache in onnxruntime_backend.py.
_COMPILED = BuildOnce()


def clear_compiled_cache() -> None:
    """Forget every cached compiled model (tests; freeing memory after a model is dropped)."""
    _COMPILED.clear()


def _compile(path: Path, precision: str, threads: int) -> Any:
    ov = import_openvino()
    try:
        core = ov.Core()
        return core.compile_model(core.read_model(str(path)), "CPU", _config(precision, threads))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises plain RuntimeError for every failure
        raise BackendUnavailableError(f"openvino cannot compile {path.name} ({precision}): {first_line(exc)}") from exc


def get_compiled(path: str | Path, *, precision: str = "fp32", threads: int | None = None, cache: bool = True) -> Any:
    """The OpenVINO compiled model for `path`, built once per (file version, precision, threads)."""
    import torch

    path = Path(path)
    check_precision(precision)
    threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
    key = (*file_key(path), precision, threads)
    if not cache:
        return _compile(path, precision, threads)
    return _COMPILED.get(key, lambda: _compile(path, precision, threads))


class OpenVinoBackend:
    """OpenVINO CPU plugin running an exported ONNX file (float32 input (N, C, H, W), dynamic N, H, W).

    Parameters:
        onnx_path: the fp32 export for "fp32" and "bf16", the int8 (QDQ) export for "int8".
        device: "cpu" ("auto" means cpu: OpenVINO's GPU plugin is for Intel GPUs, which we do not target).
        precision: "fp32" (f32 math), "bf16" (the fp32 file with bf16 math; needs AVX512_BF16 or AMX-BF16) or
            "int8" (the QDQ file: int8 convolutions, its float parts in f32). Inputs and outputs stay float32.
        threads: inference threads; None uses torch's thread count, so every backend shares one setting.
        cache: share the compiled model process-wide (the default); False compiles a private one.

    Thread-safe: a compiled model accepts concurrent infer requests, and each call borrows its own request from a
    small pool (an infer request holds its input/output tensors, so two calls must never share one).

    Raises:
        BackendUnavailableError: openvino is not installed, the precision is unknown or (bf16) not native on this
            CPU, or the file cannot be read or compiled.
    """

    name = "openvino"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        cache: bool = True,
    ) -> None:
        if device not in ("cpu", "auto"):
            raise BackendUnavailableError(f"the openvino backend runs on 'cpu' only, not {device!r}")
        import_openvino()
        self.device = "cpu"
        self.precision = check_precision(precision)
        self.model_path = Path(onnx_path)
        self._compiled = get_compiled(self.model_path, precision=precision, threads=threads, cache=cache)
        self._idle: list[Any] = []  # infer requests not in use; grows to the peak number of concurrent calls
        self._idle_lock = threading.Lock()

    def _borrow(self) -> Any:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return self._compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # (N, C, H, W) float32 -> (N, C', H*s, W*s) float32
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = self._borrow()
        try:
            # share_inputs: OpenVINO reads x in place (it stays alive for the call); outputs are copied out, so the
            # request can serve the next call at once.
            result = request.infer({0: x}, share_inputs=True)
            return np.asarray(result[0], dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises plain RuntimeError for every failure
            text = str(exc).lower()
            if "bad_alloc" in text or "out of memory" in text or "failed to allocate" in text:
                raise BackendOutOfMemory(f"out of memory on cpu for input {tuple(x.shape)}") from exc
            raise GanModelsError(f"openvino failed on input {tuple(x.shape)}: {first_line(exc)}") from exc
        finally:
            with self._idle_lock:
                self._idle.append(request)

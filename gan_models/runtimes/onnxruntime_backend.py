"""onnxruntime: the session cache and the backend that runs an exported graph (CPU, or CUDA with onnxruntime-gpu)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BackendUnavailableError, GanModelsError, first_line
from .base import BackendOutOfMemory, BuildOnce, file_key


def import_onnxruntime() -> Any:
    """onnxruntime, or a BackendUnavailableError that says how to get it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "the onnx backend needs onnxruntime, which is not installed (pip install onnxruntime, or "
            "onnxruntime-gpu for CUDA); use backend 'torch' or 'auto'"
        ) from exc
    return onnxruntime


def onnx_device(device: str = "auto") -> str:
    """"auto" → "cuda" when onnxruntime has its CUDA provider, else "cpu"; "cuda" without it is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise GanModelsError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    has_cuda = "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    if device == "cuda" and not has_cuda:
        raise BackendUnavailableError(
            "device 'cuda' was asked for but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        )
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return device


# Sessions are expensive (graph optimisation, weight prepacking) and onnxruntime's Run is thread-safe, so one
# session per (file, device, threads) serves every Translator and request in the process.
_SESSIONS = BuildOnce()


def clear_session_cache() -> None:
    """Forget every cached onnxruntime session (tests; freeing memory after a model is dropped)."""
    _SESSIONS.clear()


def _make_session(path: Path, device: str, threads: int) -> Any:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    # ORT_ENABLE_ALL adds the layout pass (NCHWc blocked convs with fused activations) on top of the basic fusions.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a conv chain has no parallel branches to run
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    # Translation models run the whole (padded) image, so shapes vary from request to request: a memory pattern
    # is planned per shape and would pile up; the arena still reuses blocks across runs.
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only: the QDQ and fusion notes are not for users
    providers: list[Any] = ["CPUExecutionProvider"]
    if device == "cuda":
        # HEURISTIC: exhaustive cuDNN search per new input shape would stall the first request of every size.
        providers.insert(0, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind types
        raise BackendUnavailableError(f"onnxruntime cannot load {path.name}: {first_line(exc)}") from exc


def get_session(path: str | Path, *, device: str = "cpu", threads: int | None = None, cache: bool = True) -> Any:
    """The onnxruntime session for `path` on `device`, built once per (file version, device, threads)."""
    path = Path(path)
    threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
    key = (*file_key(path), device, threads)
    if not cache:
        return _make_session(path, device, threads)
    return _SESSIONS.get(key, lambda: _make_session(path, device, threads))


def _is_out_of_memory(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("failed to allocate", "bad_alloc", "out of memory", "cudaerrormemoryallocation"))


class OnnxBackend:
    """onnxruntime: CUDAExecutionProvider when available (and asked for), else CPU.

    Parameters:
        model_path: an exported .onnx file (float32 input "input" (N, C, H, W) → "output").
        device: "auto", "cpu" or "cuda".
        threads: intra-op threads; None uses torch's thread count (one per core unless the app set it at start-up),
            so both backends share one setting.
        precision: what the file holds ("fp32", "fp16", "int8"), for info lines; inputs stay float32.
        cache: share the session process-wide (the default); False builds a private one (export checks).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
        precision: str = "fp32",
        cache: bool = True,
    ) -> None:
        self.device = onnx_device(device)
        self.precision = precision
        self.model_path = Path(model_path)
        self._session = get_session(self.model_path, device=self.device, threads=threads, cache=cache)
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # (N, C, H, W) float32 -> (N, C', H*s, W*s) float32
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            return self._session.run([self._output], {self._input: x})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind types
            if _is_out_of_memory(exc):
                raise BackendOutOfMemory(f"out of memory on {self.device} for input {tuple(x.shape)}") from exc
            raise GanModelsError(f"onnxruntime failed on input {tuple(x.shape)}: {first_line(exc)}") from exc

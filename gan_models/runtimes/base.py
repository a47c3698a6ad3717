"""What every runtime shares: the Backend protocol, the slot a Translator's backend sits in, the out-of-memory
signal (defined in errors.py, re-exported here) and the device choice.

A backend runs a network on a batch: numpy (N, C, H, W) float32 in, numpy float32 out. This is the only thing that
differs between runtimes; everything around it (padding and tiling in `tiling.run_array`, colour handling in the
Translator) is shared, so a parity check of two backends checks exactly what users run. Backends hold no per-request
state and are safe to call from several threads at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import BackendOutOfMemory, BackendUnavailableError, GanModelsError

__all__ = ["Backend", "BackendOutOfMemory", "BackendSlot", "BuildOnce", "file_key", "resolve_device"]


class Backend(Protocol):
    name: str  # a key of RUNTIMES: "torch", "onnxruntime", ...
    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "fp16" | "int8" | "bf16"

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def resolve_device(device: str = "auto") -> str:
    """"auto" → "cuda" when a CUDA device is usable, else "cpu"; anything else is checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise GanModelsError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise GanModelsError("device 'cuda' was asked for but no CUDA device is available")
    return device


class BackendSlot:
    """The backend a Translator's next request runs on: read with `get()` at the start of a request (which then
    keeps it), replaced with `swap()` by a background switch. Thread-safe; one slot may serve several Translators
    (a Hub model's fallback shares its stand-in's slot, so both follow one switch)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock = threading.Lock()

    def get(self) -> Backend:
        with self._lock:
            return self._backend

    def swap(self, backend: Backend) -> Backend:
        """Put `backend` in for the next request; returns the one it replaces (requests running keep theirs)."""
        with self._lock:
            previous, self._backend = self._backend, backend
        return previous


# Built objects kept for sharing (sessions / compiled models; a model has up to ~6 candidates): a backend holds its
# own reference, so one dropped from here keeps serving its Translator and is only built again for a new backend.
BUILT_KEPT = 32


class BuildOnce:
    """Expensive objects built from a graph file (onnxruntime sessions, OpenVINO compiled models), shared by every
    Translator and request in the process: one build per key, even when several threads ask at once.

    Keys come from `file_key`, so a file rewritten in place (new weights exported) is built again. At most
    `max_kept` objects are kept, the least recently used dropped first.
    """

    def __init__(self, *, max_kept: int = BUILT_KEPT) -> None:
        self._max_kept = max_kept
        self._items: OrderedDict[Hashable, Any] = OrderedDict()  # least recently used first
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._guard:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
            lock = self._locks.setdefault(key, threading.Lock())
        try:
            with lock:  # one build per key
                with self._guard:
                    item = self._items.get(key)
                if item is None:
                    item = build()
                    with self._guard:
                        self._items[key] = item
                        self._evict()
        finally:
            with self._guard:  # no thread waits on it: later asks find the item (or build again after a failure)
                if self._locks.get(key) is lock and not lock.locked():
                    del self._locks[key]
        return item

    def __len__(self) -> int:
        with self._guard:
            return len(self._items)

    def _evict(self) -> None:
        while len(self._items) > self._max_kept:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget everything built (tests; freeing memory after a model is dropped)."""
        with self._guard:
            self._items.clear()
            self._locks.clear()


def file_key(path: Path) -> tuple:
    """(resolved path, size, mtime) of a graph file; BackendUnavailableError when it is missing."""
    try:
        st = path.stat()
    except OSError as exc:
        raise BackendUnavailableError(f"ONNX model {path} is missing") from exc
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)

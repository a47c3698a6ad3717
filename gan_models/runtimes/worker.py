"""Background preparation: export, calibrate and time a loaded model off the request path, then hand over the winner.

    job = preparer.submit(loaded, device="cpu", on_ready=translator.slot.swap)

A Translator starts on torch and answers at once; when the job finishes, `on_ready` gets the tournament's backend
(not called when torch fp32 itself won: the Translator already runs it). Bounded: `jobs` threads (one by default:
exports and timing want the whole CPU, and two at once would time each other) and at most `max_queued` waiting jobs;
a full queue refuses the job (the model stays on torch until it is loaded again). A job that fails is remembered for
these weights (the last `max_failed`) and not run again in this process, however many requests or loads ask; a
finished choice is kept (the last `max_kept`) so the next Translator of the same weights starts on it directly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GanModelsError, first_line
from ..specs import ModelSpec
from ..weights import LoadedModel
from .base import Backend, resolve_device
from .onnx_export import spec_record
from .tournament import Outcome, run_tournament

logger = logging.getLogger(__name__)

OnReady = Callable[[Backend], None]
DEFAULT_JOBS = 1
DEFAULT_MAX_QUEUED = 8
DEFAULT_MAX_KEPT = 8
# Failed preparations remembered (a small Job each): enough for every model an app keeps loaded many times over; a
# failure pushed out is tried again when its model is next loaded.
DEFAULT_MAX_FAILED = 64


BACKGROUND_NICE = 19  # requests first: a preparation only gets the CPU time that requests leave


def lower_priority(nice: int = BACKGROUND_NICE) -> bool:
    """Run the calling thread, and the threads the runtimes start from it (they inherit it), at `nice`.

    Linux gives each thread its own nice value (setpriority on the thread id); elsewhere this is a no-op returning
    False. Exports and timing then take only the CPU that requests leave, instead of doubling a request's time.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # no per-thread priorities here, or not permitted
        return False
    return True


def weights_key(loaded: LoadedModel, device: str, threads: int | None) -> tuple:
    """Which weights a job is about, cheaply (no hashing): the weights file as it is now, or the module in memory."""
    source = loaded.source
    path = Path(source.path) if source is not None else None
    if path is not None and path.is_file():
        st = path.stat()
        identity: tuple = ("file", str(path.resolve()), st.st_size, st.st_mtime_ns)
    else:
        identity = ("module", id(loaded.module))
    return (_spec_key(loaded.spec), identity, device, threads)


def _spec_key(spec: ModelSpec) -> str:
    # ModelSpec holds dicts (arch kwargs), so it is not hashable; its record is what the export cache keys on too.
    return json.dumps(spec_record(spec), sort_keys=True)


@dataclass
class Job:
    """One preparation. `wait()` for it; then `record` (the tournament's, with every verdict) or `error` is set.

    `backend` is what Translators switch to: None while running, on failure, and when torch fp32 won (they already
    run it; the tournament's own torch copy is dropped rather than kept alive here).
    """

    key: tuple
    spec_id: str
    done: threading.Event = field(default_factory=threading.Event)
    backend: Backend | None = None
    record: dict | None = None
    reused: bool = False
    error: str | None = None
    _callbacks: list[OnReady] = field(default_factory=list)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def _finish(self, outcome: Outcome) -> None:
        self.record, self.reused = outcome.record, outcome.reused
        if (outcome.runtime, outcome.precision) != ("torch", "fp32"):
            self.backend = outcome.backend


class Preparer:
    """A bounded background queue of tournaments.

    Parameters:
        jobs: worker threads (started on the first submit, daemons: an interrupted export leaves no partial file).
        max_queued: jobs waiting at most; more are refused.
        max_kept: finished choices remembered for instant reuse.
        max_failed: failed preparations remembered (not run again), the oldest forgotten first.
        root: the export cache (default `cache_dir()`).
    """

    def __init__(self, *, jobs: int = DEFAULT_JOBS, max_queued: int = DEFAULT_MAX_QUEUED,
                 max_kept: int = DEFAULT_MAX_KEPT, max_failed: int = DEFAULT_MAX_FAILED,
                 root: Path | None = None) -> None:
        if jobs < 1 or max_queued < 1:
            raise GanModelsError(f"a Preparer needs jobs >= 1 and max_queued >= 1, not {jobs} and {max_queued}")
        self._jobs = jobs
        self._max_kept = max_kept
        self._max_failed = max_failed
        self._root = root
        self._queue: queue.Queue[tuple[Job, Callable[[], LoadedModel], str, int | None]] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._active: dict[tuple, Job] = {}  # queued or running, by key: a second ask joins the first
        self._finished: OrderedDict[tuple, Job] = OrderedDict()  # succeeded, most recent last
        self._failed: OrderedDict[tuple, Job] = OrderedDict()  # not run again while remembered, most recent last
        self._threads: list[threading.Thread] = []

    def submit(
        self, loaded: LoadedModel, *, device: str = "auto", threads: int | None = None,
        on_ready: OnReady | None = None,
    ) -> Job:
        """Prepare `loaded` in the background; `on_ready(backend)` runs when a runtime other than torch fp32 wins.

        Returns at once. When these weights were already prepared, `on_ready` runs now (in this thread); when their
        preparation failed before, the failed job is returned and nothing runs.
        """
        device = resolve_device(device)
        return self._submit(weights_key(loaded, device, threads), loaded.spec.id, lambda: loaded, device, threads,
                            on_ready)

    def warm(self, spec_or_loaded: ModelSpec | LoadedModel, *, device: str = "auto", threads: int | None = None) -> Job:
        """Prepare a model before anyone asks for it (start-up): a spec's weights are loaded by the worker."""
        if isinstance(spec_or_loaded, LoadedModel):
            return self.submit(spec_or_loaded, device=device, threads=threads)
        from ..weights import load_model

        spec = spec_or_loaded
        device = resolve_device(device)
        return self._submit(("warm", _spec_key(spec), device, threads), spec.id, lambda: load_model(spec),
                            device, threads, None)

    def ready(self, loaded: LoadedModel, *, device: str = "auto", threads: int | None = None) -> Job | None:
        """The finished job of these weights (success or remembered failure), or None."""
        key = weights_key(loaded, resolve_device(device), threads)
        with self._lock:
            return self._finished.get(key) or self._failed.get(key)

    def _submit(self, key: tuple, spec_id: str, load: Callable[[], LoadedModel], device: str, threads: int | None,
                on_ready: OnReady | None) -> Job:
        with self._lock:
            done = self._finished.get(key) or self._failed.get(key)
            if done is None:
                job = self._active.get(key)
                if job is not None:
                    if on_ready is not None:
                        job._callbacks.append(on_ready)
                    return job
                job = Job(key=key, spec_id=spec_id, _callbacks=[on_ready] if on_ready is not None else [])
                try:
                    self._queue.put_nowait((job, load, device, threads))
                except queue.Full:
                    job.error = f"background queue full ({self._queue.maxsize} jobs waiting); staying on torch"
                    job.done.set()
                    logger.warning("%s: %s", spec_id, job.error)
                    return job
                self._active[key] = job
                self._start_threads()
                return job
        if done.backend is not None and on_ready is not None:
            on_ready(done.backend)
        return done

    def _start_threads(self) -> None:
        while len(self._threads) < self._jobs:
            t = threading.Thread(target=self._work, name=f"gan-prepare-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    def _work(self) -> None:
        lower_priority()
        while True:
            job, load, device, threads = self._queue.get()
            try:
                self._run(job, load, device, threads)
            finally:
                self._queue.task_done()

    def _run(self, job: Job, load: Callable[[], LoadedModel], device: str, threads: int | None) -> None:
        try:
            loaded = load()
            job._finish(run_tournament(loaded.spec, loaded.module, loaded.source, device=device, threads=threads,
                                       root=self._root))
        except Exception as exc:  # noqa: BLE001 - a background failure must never reach a request; it is remembered
            job.error = f"{type(exc).__name__}: {first_line(exc)}"
            logger.warning("%s: background preparation failed, staying on torch: %s", job.spec_id, job.error)
        with self._lock:
            self._active.pop(job.key, None)
            if job.error is not None:
                self._failed[job.key] = job
                while len(self._failed) > self._max_failed:
                    self._failed.popitem(last=False)
            else:
                self._finished[job.key] = job
                if job.key[0] == "warm":  # the Translator that loads these weights later asks by their file
                    self._finished[weights_key(loaded, device, threads)] = job
                while len(self._finished) > self._max_kept:
                    self._finished.popitem(last=False)
            callbacks, job._callbacks = job._callbacks, []
        job.done.set()
        if job.record is not None:
            logger.info("%s: %s (%s)", job.spec_id, job.record.get("chosen"),
                        "recorded choice" if job.reused else "tournament")
        if job.backend is not None:
            for callback in callbacks:
                callback(job.backend)


_DEFAULT: Preparer | None = None
_DEFAULT_GUARD = threading.Lock()


def default_preparer() -> Preparer:
    """The process-wide Preparer that `translator_for(background=True)` and `warm` use (made on first use)."""
    global _DEFAULT
    with _DEFAULT_GUARD:
        if _DEFAULT is None:
            _DEFAULT = Preparer()
        return _DEFAULT


def warm(spec_or_loaded: ModelSpec | LoadedModel, *, device: str = "auto", threads: int | None = None) -> Job:
    """Prepare a model in the background now (the app's start-up, for each tab's default); returns its job."""
    return default_preparer().warm(spec_or_loaded, device=device, threads=threads)


def prepare_in_background(
    loaded: LoadedModel, *, device: str = "auto", threads: int | None = None, on_ready: OnReady | None = None
) -> Job:
    return default_preparer().submit(loaded, device=device, threads=threads, on_ready=on_ready)

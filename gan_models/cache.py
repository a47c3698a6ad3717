"""The loaded models a process serves from: a bounded LRU of Translators shared by every request.

    cache = ModelCache(SPECS, settings=Settings.from_env())
    with cache.use(cache.spec("realesrgan-x4")) as translator:    # loaded on first use, held while the block runs
        result = translator.pinned()(image)                       # one backend for the whole request

Used by the app, the CLI (`python -m gan_models run`) and the benchmarks. A Translator holds no per-request state,
so one instance serves concurrent requests; what is bounded here is memory: at most `settings.max_models` models
stay loaded, failures are remembered for `settings.retry_after_s` (the last FAILURES_KEPT), custom ids tried are
listed for /models (the last CUSTOM_ROWS_KEPT).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from .custom import resolve_custom
from .errors import GanModelsError, UnknownModelError, first_line
from .pipeline import Translator, build_translator
from .runtimes import requested_backend
from .settings import Settings
from .specs import ModelSpec
from .weights import LoadedModel, load_model

logger = logging.getLogger(__name__)

FAILURES_KEPT = 64  # remembered load failures (small) beside the max_models loaded translators
CUSTOM_ROWS_KEPT = 32  # custom ids listed at /models, most recent last

Key = tuple[str, str, str]


@dataclass(frozen=True)
class _Entry:
    translator: Translator | None
    error: GanModelsError | None
    expires: float  # time.monotonic() after which the entry is retried; inf for a model that loaded fine


class ModelCache:
    """Loaded translators shared by all requests, keyed by (spec id, backend, device); a bounded LRU.

    At most `settings.max_models` translators stay loaded: loading one more drops the least recently used that no
    running request holds (see `use`); curated models reload on demand like custom ones. Each model loads once, even
    when several requests ask at once (a lock per key). Failures are remembered for `retry_after_s` so that, with
    the Hub unreachable, later requests do not wait on the network again. A Hub model that cannot be had is served
    by its bundled `fallback` spec (`load_model` decides); the fallback's translator is made once and shared by
    every Hub model that falls back to it (one copy in memory, one backend slot, so one background switch).

    Parameters:
        specs: the models on offer, by id; a fallback must be one of them. Other ids are custom models
            (`gan_models.custom`), resolved with the settings' max_weights_mb and custom_models switch.
        settings: backend, device, retry_after_s (how long a failure, or a fallback in place of a Hub model, is
            remembered), tile_budget_mb, max_models, max_weights_mb and custom_models.
        allow_fallback: False: a Hub model that cannot be had fails instead of using its fallback.
        background: with backend "auto", answer on torch at once and switch when the runtime is prepared (a server);
            False chooses the runtime before the first run (a batch job).
        threads: CPU threads of each model's backend (None: the process's torch setting).
    """

    def __init__(self, specs: Mapping[str, ModelSpec], *, settings: Settings, allow_fallback: bool = True,
                 background: bool = True, threads: int | None = None) -> None:
        self.specs = dict(specs)
        self.settings = settings
        self._allow_fallback = allow_fallback
        self._background = background
        self._threads = threads
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()  # least recently used first
        self._in_use: Counter[Key] = Counter()  # running requests per key: never evicted
        self._locks: dict[Key, threading.Lock] = {}
        self._custom: OrderedDict[str, ModelSpec | GanModelsError] = OrderedDict()  # custom ids tried, for /models
        self._guard = threading.Lock()

    def _key(self, model_id: str) -> Key:
        return (model_id, self.settings.backend, self.settings.device)

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def spec(self, model_id: str, *, allow_local: bool = False) -> ModelSpec:
        """An offered model's spec, else the custom model `model_id` names (downloaded and detected once).

        Parameters:
            allow_local: let `model_id` name a file on this machine (uploads, the CLI); text typed by visitors is
                a Hub id only.

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

    def warm(self, model_ids: Iterable[str]) -> threading.Thread:
        """Load these models in a background thread (start-up) so that first requests find them loaded; a failure
        is logged and remembered like any other, and the next one goes on. Returns the (daemon) thread."""
        ids = list(model_ids)

        def load() -> None:
            for model_id in ids:
                try:
                    self.get(model_id)
                except GanModelsError as exc:
                    logger.warning("warming %s failed: %s", model_id, first_line(exc))

        thread = threading.Thread(target=load, name="warm-models", daemon=True)
        thread.start()
        return thread

    def loaded(self) -> list[str]:
        """Ids of the loaded translators, least recently used first."""
        with self._guard:
            return [key[0] for key, entry in self._entries.items() if entry.translator is not None]

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

    def _forget(self, key: Key) -> None:
        del self._entries[key]
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():  # else a load of this key is under way and keeps it
            del self._locks[key]

    def _load(self, spec: ModelSpec) -> _Entry:
        retry_at = time.monotonic() + self.settings.retry_after_s
        try:
            requested_backend(self.settings.backend)  # before loading: a typo should not cost a download
            loaded = load_model(spec, allow_fallback=self._allow_fallback, specs=self.specs)
            if not loaded.fell_back:
                return _Entry(self._build(loaded), None, float("inf"))
            shared = self._shared_fallback(loaded)
        except GanModelsError as exc:
            logger.warning("%s failed to load: %s", spec.id, exc)
            return _Entry(None, exc, retry_at)
        logger.warning("%s", loaded.fallback_reason)
        # Remembered for retry_after_s only: after that the Hub is tried again. The shared slot follows the
        # fallback model's background switch.
        translator = Translator(shared.spec, slot=shared.slot, source=shared.source,
                                fallback_reason=loaded.fallback_reason, tile_budget_mb=self.settings.tile_budget_mb)
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
                                threads=self._threads, background=self._background,
                                tile_budget_mb=self.settings.tile_budget_mb)


class _KnownSpecs(Mapping[str, ModelSpec]):
    """ModelCache.known_specs(): what deploy.gpu_durations sizes a ZeroGPU reservation from, at request time."""

    def __init__(self, cache: ModelCache) -> None:
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

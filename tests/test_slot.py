"""The Translator's backend slot (a switch reaches the next request only) and the bounds of the runtimes' caches:
Preparer's remembered failures and BuildOnce's built objects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gan_models import Translator
from gan_models.errors import GanModelsError, OnnxExportError
from gan_models.runtimes import BackendSlot, worker
from gan_models.runtimes.base import BuildOnce
from gan_models.runtimes.worker import Preparer
from gan_models.weights import LoadedModel, build_generator

from .conftest import run_in_threads


class Upscale2:
    """A nearest-neighbour x2 'network' that counts its calls; `on_call` runs inside each call."""

    device, precision = "cpu", "fp32"

    def __init__(self, name: str, on_call=None) -> None:
        self.name, self.calls, self._on_call = name, 0, on_call

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self._on_call is not None:
            self._on_call()
        return x.repeat(2, axis=2).repeat(2, axis=3)


def _spec(tiny_specs):
    return dataclasses.replace(tiny_specs["upscale"], scale=2, tile=64, tile_overlap=8)


def test_a_switch_during_a_request_reaches_only_the_next_request(tiny_specs):
    new = Upscale2("new")
    translator: Translator  # the running request swaps the slot from inside its first tile
    old = Upscale2("old", on_call=lambda: translator.slot.swap(new))
    translator = Translator(_spec(tiny_specs), old)
    x = np.random.default_rng(0).random((1, 3, 150, 150), dtype=np.float32)
    y = translator.run_array(x, tile=64)  # 3 x 3 tiles
    assert y.shape == (1, 3, 300, 300) and (old.calls, new.calls) == (9, 0)  # the whole request ran on `old`
    assert translator.backend is new
    translator.run_array(x, tile=64)
    assert (old.calls, new.calls) == (9, 9)


def test_a_pinned_translator_keeps_its_backend_and_the_backend_is_read_only(tiny_specs):
    old, new = Upscale2("old"), Upscale2("new")
    translator = Translator(_spec(tiny_specs), old)
    pinned = translator.pinned()
    assert translator.slot.swap(new) is old
    assert translator.backend is new and pinned.backend is old
    pinned.run_array(np.zeros((1, 3, 8, 8), np.float32), tile=None)
    assert (old.calls, new.calls) == (1, 0)
    with pytest.raises(AttributeError):
        translator.backend = old
    with pytest.raises(dataclasses.FrozenInstanceError):
        translator.spec = _spec(tiny_specs)


def test_translators_sharing_a_slot_follow_one_switch(tiny_specs):
    old, new = Upscale2("old"), Upscale2("new")
    own = Translator(_spec(tiny_specs), old)
    stand_in = Translator(own.spec, slot=own.slot, fallback_reason="the Hub is unreachable")
    own.slot.swap(new)
    assert stand_in.backend is new and stand_in.fell_back
    with pytest.raises(GanModelsError, match="a backend or a slot"):
        Translator(own.spec, old, slot=BackendSlot(new))


def test_concurrent_swaps_and_reads_see_whole_backends():
    backends = [Upscale2(str(i)) for i in range(4)]
    slot = BackendSlot(backends[0])
    seen: list[object] = []
    run_in_threads(lambda i: [seen.append(slot.swap(backends[i % 4])) for _ in range(200)], 4)
    assert set(map(id, seen)) <= set(map(id, backends)) and slot.get() in backends


def test_remembered_preparation_failures_are_bounded(tiny_specs, monkeypatch):
    def failing(*args, **kwargs):
        raise OnnxExportError("simulated: the exporter crashed")

    monkeypatch.setattr(worker, "run_tournament", failing)
    spec = tiny_specs["style"]
    models = [LoadedModel(spec=spec, module=build_generator(spec).eval(), source=None) for _ in range(3)]
    prep = Preparer(max_failed=2)
    jobs = [prep.submit(m, device="cpu") for m in models]
    assert all(job.wait(60) and "exporter crashed" in job.error for job in jobs)
    assert prep.ready(models[0], device="cpu") is None  # the oldest failure was forgotten: it may run again
    assert [prep.ready(m, device="cpu") for m in models[1:]] == jobs[1:]
    assert worker.DEFAULT_MAX_FAILED >= 1


def test_build_once_keeps_at_most_max_kept_objects(monkeypatch):
    built: list[str] = []

    def build(key: str):
        def make() -> object:
            built.append(key)
            return object()
        return make

    cache = BuildOnce(max_kept=2)
    a = cache.get("a", build("a"))
    cache.get("b", build("b"))
    assert cache.get("a", build("a")) is a  # used again: "b" is now the least recently used
    cache.get("c", build("c"))
    assert len(cache) == 2 and built == ["a", "b", "c"]
    assert cache.get("a", build("a")) is a
    cache.get("b", build("b"))
    assert built == ["a", "b", "c", "b"]  # dropped, so built again

    run_in_threads(lambda i: cache.get("d", build("d")), 4)
    assert built.count("d") == 1 and len(cache) == 2

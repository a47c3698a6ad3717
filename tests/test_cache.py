"""gan_models.cache.ModelCache on tiny local models, offline: the LRU bound, in-use protection, failure memory,
the shared fallback and one load per model however many requests ask at once."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from gan_models import HubFile, WeightsError, WeightsUnavailableError
from gan_models import cache as model_cache
from gan_models.cache import ModelCache
from gan_models.errors import GanModelsError

from .conftest import app_settings, make_tiny_model, rgb_image, run_in_threads


@pytest.fixture
def specs(tmp_path):
    """Three upscalers (different seeds), a broken one and a Hub style model that falls back to a bundled one."""
    ups = {f"up{i}": dataclasses.replace(make_tiny_model(tmp_path / f"up{i}", "upscale", seed=i), id=f"up{i}")
           for i in range(3)}
    style = make_tiny_model(tmp_path / "style", "style")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(64))
    hub = dataclasses.replace(style, id="hub-style", fallback=style.id, bundled=None,
                              sources=(HubFile(repo_id="nobody/not-a-real-repo", filename="g.pth", revision="main"),))
    return {**ups, style.id: style, "hub-style": hub,
            "broken": dataclasses.replace(ups["up0"], id="broken", bundled=broken)}


@pytest.fixture
def loads(monkeypatch):
    """The ids `load_model` is called with, in order."""
    calls: list[str] = []
    real = model_cache.load_model

    def counting(spec, **kwargs):
        calls.append(spec.id)
        return real(spec, **kwargs)

    monkeypatch.setattr(model_cache, "load_model", counting)
    return calls


def test_at_most_max_models_stay_loaded_least_recently_used_first_out(specs, loads):
    cache = ModelCache(specs, settings=app_settings(max_models=2))
    for model_id in ("up0", "up1", "up0", "up2"):  # up0 used again: up1 is the least recently used
        assert cache.get(model_id)(rgb_image(8, 6)).size == (32, 24)
    assert cache.loaded() == ["up0", "up2"]
    assert cache.status(specs["up1"]) == (True, "not loaded (loads on first use)")
    cache.get("up1")
    assert loads == ["up0", "up1", "up2", "up1"] and cache.loaded() == ["up2", "up1"]


def test_a_model_in_use_is_never_evicted(specs):
    cache = ModelCache(specs, settings=app_settings(max_models=1))
    with cache.use(specs["up0"]) as held:
        with cache.use(specs["up1"]):
            assert cache.loaded() == ["up0", "up1"]  # both held: over the bound rather than break a request
        assert cache.loaded() == ["up0"]  # up1 released: dropped at once, up0 is still held
        cache.get("up2")
        assert cache.loaded() == ["up0"] and held(rgb_image(8, 6)).size == (32, 24)
    cache.get("up2")
    assert cache.loaded() == ["up2"]  # up0 released: evicted like any other


def test_a_failure_is_remembered_until_retry_after(specs, loads):
    cache = ModelCache(specs, settings=app_settings(retry_after_s=600))
    with pytest.raises(WeightsError) as first:
        cache.get("broken")
    with pytest.raises(WeightsError) as again:
        cache.get("broken")
    assert again.value is first.value and loads == ["broken"]
    assert cache.status(specs["broken"])[0] is False and "unavailable" in cache.status(specs["broken"])[1]

    retrying = ModelCache(specs, settings=app_settings(retry_after_s=0))
    for _ in range(2):
        with pytest.raises(WeightsError):
            retrying.get("broken")
    assert loads == ["broken", "broken", "broken"]


def test_a_bad_backend_fails_before_any_loading(specs, loads):
    cache = ModelCache(specs, settings=app_settings(backend="tf"))
    with pytest.raises(GanModelsError, match="unknown backend 'tf'"):
        cache.get("up0")
    assert loads == []


def test_hub_models_share_the_fallback_models_translator_and_slot(specs, loads, offline_hub):
    cache = ModelCache(specs, settings=app_settings())
    hub, own = cache.get("hub-style"), cache.get("tiny-style")
    assert hub.fell_back and "Hub unreachable for hub-style" in hub.fallback_reason and not own.fell_back
    assert hub.slot is own.slot and hub.spec.id == own.spec.id == "tiny-style"
    assert loads == ["hub-style"]  # the fallback's weights were read once, for both entries
    assert cache.status(specs["hub-style"]) == (True, f"fallback: {hub.fallback_reason}")
    with pytest.raises(WeightsUnavailableError):
        ModelCache(specs, settings=app_settings(), allow_fallback=False).get("hub-style")


def test_two_requests_for_one_model_load_it_once(specs, monkeypatch):
    calls: list[str] = []
    real = model_cache.load_model

    def slow(spec, **kwargs):
        calls.append(spec.id)
        time.sleep(0.5)  # both requests arrive while the first load runs
        return real(spec, **kwargs)

    monkeypatch.setattr(model_cache, "load_model", slow)
    cache = ModelCache(specs, settings=app_settings())
    got: dict[int, object] = {}
    run_in_threads(lambda i: got.__setitem__(i, cache.get("up0")), 2)
    assert calls == ["up0"] and got[0] is got[1]


def test_warm_loads_in_the_background_and_goes_on_after_a_failure(specs, loads):
    cache = ModelCache(specs, settings=app_settings())
    thread = cache.warm(["broken", "up1"])
    assert isinstance(thread, threading.Thread)
    thread.join(60)
    assert loads == ["broken", "up1"] and cache.loaded() == ["up1"]

"""The app and the background runtime choice: no request waits for an export, and the app switches once it is ready.

The first request of a model answers on torch while a background worker exports and times it; later requests run
on the runtime the tournament chose, and the info line names the path each request ran. A Hub model served by its
bundled fallback follows the same switch. `python app.py` loads each tab's default model at start-up.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from app import Studio
from gan_models import cache as model_cache
from gan_models.cache import ModelCache
from gan_models.runtimes import RUNTIMES, worker

from .conftest import app_settings, build_app_models, rgb_image


@pytest.fixture
def exported_only(monkeypatch):
    """Only the exported runtimes compete, so a switch away from torch is certain."""
    monkeypatch.delitem(RUNTIMES, "torch")


def _wait_for_switch(translator, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while translator.backend.name == "torch":
        assert time.monotonic() < deadline, f"{translator.spec.id} never left torch"
        time.sleep(0.1)


# A whole tournament at nice 19 in the background: 8 s at load 5 on 2 cores, over 300 s at load 20-29. The next
# test (a fallback entry follows the switch) keeps the switch in the default run.
@pytest.mark.slow
def test_first_request_answers_on_torch_and_later_ones_on_the_chosen_runtime(tmp_path, preparer, exported_only,
                                                                             monkeypatch):
    gate = threading.Event()
    real = worker.run_tournament
    monkeypatch.setattr(worker, "run_tournament", lambda *a, **k: (gate.wait(60), real(*a, **k))[1])
    studio = Studio(specs=build_app_models(tmp_path / "models"), config=app_settings(backend="auto", device="cpu"))
    image = tmp_path / "in.png"
    rgb_image(40, 28, seed=3).save(image)

    (_, after), path, info = studio.upscale(str(image), "tiny-upscale", 4, "auto")
    assert "· torch on cpu ·" in info  # answered while the export waits behind the gate
    gate.set()
    translator = studio.cache.get("tiny-upscale")
    _wait_for_switch(translator)
    _, path2, info2 = studio.upscale(str(image), "tiny-upscale", 4, "auto")
    chosen = translator.backend
    assert f"· {chosen.name}" in info2 and chosen.name in ("onnxruntime", "openvino") and "torch on cpu" not in info2


    first, later = (np.asarray(Image.open(p), np.float64) for p in (path, path2))
    assert first.shape == later.shape == (28 * 4, 40 * 4, 3)
    mse = float(np.mean((first - later) ** 2))
    assert mse == 0 or 10 * np.log10(255.0**2 / mse) >= 40


@pytest.mark.slow  # 10 s: a background preparation to its switch; CI's slow step runs it
def test_a_fallback_entry_follows_the_switch_of_the_model_it_shares(tmp_path, preparer, exported_only, offline_hub):
    cache = ModelCache(build_app_models(tmp_path / "models"), settings=app_settings(backend="auto", device="cpu"))
    hub, own = cache.get("hub-style"), cache.get("tiny-style")
    assert hub.fell_back and hub.backend is own.backend and own.backend.name == "torch"
    _wait_for_switch(own)
    _wait_for_switch(hub)
    assert hub.backend is own.backend and hub.backend.name in ("onnxruntime", "openvino")


def test_start_up_loads_each_tabs_default_model_in_the_background(tmp_path, monkeypatch):
    loaded: list[str] = []
    real = model_cache.load_model
    monkeypatch.setattr(model_cache, "load_model", lambda spec, **kw: (loaded.append(spec.id), real(spec, **kw))[1])
    studio = Studio(specs=build_app_models(tmp_path / "models"), config=app_settings())
    studio.warm_defaults().join(120)
    assert sorted(loaded) == sorted({studio.default_model(t) for t in ("style", "sketch2photo", "upscale")})
    assert all(studio.cache.status(studio.specs[i])[1] == "loaded" for i in loaded)
    studio.cache.get(studio.default_model("upscale"))
    assert len(loaded) == 3  # the first request finds it loaded

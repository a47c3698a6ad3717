"""Custom models in the app: Hub ids and uploaded weights files through the Gradio client API, refusals, /models,
the operator's switch, the bounded model cache, and the ZeroGPU wrapping of the handlers.

Custom Hub repos are written in their publishers' layouts into the fake offline Hugging Face cache the test server
reads (HF_HOME of `serve`), as tests/test_custom.py does for the library.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import save_file

import app
from app import CUSTOM_CHOICE, Studio, build_demo
from gan_models import custom, zerogpu
from gan_models.cache import ModelCache

from .conftest import (
    SKETCH_ID,
    STYLE_ID,
    UPSCALE_ID,
    Evil,
    app_settings,
    build_app_models,
    make_tiny_model,
    rgb_image,
    serve,
    stub_spaces,
    tiny_net,
    write_hub_models,
)

MAX_WEIGHTS_MB = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Client, Path]]:
    root = tmp_path_factory.mktemp("custom_server")
    write_hub_models(root / "hf" / "hub")
    custom.clear_cache()
    config = app_settings(concurrency=2, max_style_side=64, max_weights_mb=MAX_WEIGHTS_MB, max_file_size="4mb",
                          max_models=3)
    with serve(build_app_models(root / "models"), config, root / "hf") as url:
        yield Client(url, verbose=False, download_files=str(root / "downloads")), root
    custom.clear_cache()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("custom_images") / "photo.png"
    rgb_image(40, 28).save(path)
    return path


def _size(path: str) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _upscale(client: Client, photo: Path, model: str, weights: Path | None = None) -> tuple[tuple[int, int], str]:
    (_, after), png, info = client.predict(handle_file(photo), model, 2, "auto",
                                           handle_file(weights) if weights else None, api_name="/upscale")
    return _size(png), info


def _serves_normally(client: Client, photo: Path) -> None:
    assert _upscale(client, photo, "tiny-upscale")[0] == (80, 56)


def test_custom_hub_id_in_each_tab(server, photo):
    client, _ = server
    out, info = client.predict(handle_file(photo), STYLE_ID, "original", api_name="/style_transfer")
    assert _size(out) == (40, 28) and "latest_net_G" in info and "Hugging Face cache" in info

    sketch = Image.new("RGB", (100, 80), "white")
    sketch.paste((0, 0, 0), (20, 20, 80, 24))
    sketch_path = photo.parent / "sketch.png"
    sketch.save(sketch_path)
    canvas = {"background": handle_file(sketch_path), "layers": [], "composite": None}
    out, info = client.predict(canvas, SKETCH_ID, True, api_name="/sketch_to_photo")
    assert _size(out) == (40, 32)  # short side = the detected U-Net's input size (2**5 = 32)

    size, info = _upscale(client, photo, UPSCALE_ID)
    assert size == (80, 56) and f"`{UPSCALE_ID}`" in info


def test_uploaded_weights_file_is_used_with_the_custom_entry(server, photo, tmp_path):
    client, _ = server
    weights = tmp_path / "4x_compact.safetensors"
    save_file(tiny_net("srvgg_compact", seed=3).state_dict(), weights)
    size, info = _upscale(client, photo, CUSTOM_CHOICE, weights)
    assert size == (80, 56) and "4x_compact.safetensors" in info and "local file" in info
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["4x_compact.safetensors"]["arch"] == "srvgg_compact"  # listed by its name, not the temp path
    with pytest.raises(AppError, match="Custom model: type a Hub id .* or drop a weights file"):
        _upscale(client, photo, CUSTOM_CHOICE)


@pytest.mark.parametrize(("model", "upload", "message"), [
    ("me/bert/model.bin", None, r"1 tensors, first keys bert\.embeddings.*not a CycleGAN/Pix2Pix/SR generator"),
    ("me/huge/model.pth", None, r"me/huge/model\.pth: 3 MB is over this server's limit of 2 MB "
                                r"\(GAN_STUDIO_MAX_WEIGHTS_MB\)"),
    (CUSTOM_CHOICE, "evil", "refused: the file holds pickled objects other than tensors"),
    (CUSTOM_CHOICE, "big", r"big\.pth: 3 MB is over this server's limit of 2 MB \(GAN_STUDIO_MAX_WEIGHTS_MB\)"),
    (CUSTOM_CHOICE, "notes.txt", r"Invalid file type\. Please upload a file that is one of these formats: "
                                 r"\['\.safetensors', '\.pth'"),
    ("__local__", None, "local files are not accepted here"),
    (STYLE_ID, None, r"latest_net_G\.pth is a style model, not for upscale; choose one of: tiny-upscale"),
    ("me/not-cached", None, "cannot list the repo"),
])
def test_bad_custom_models_get_one_line_and_the_server_keeps_serving(server, photo, tmp_path, capsys, model,
                                                                      upload, message):
    client, root = server
    weights = None
    if upload == "evil":
        weights = tmp_path / "evil.pth"
        torch.save({"model.1.weight": torch.zeros(1), "x": Evil()}, weights)
    elif upload == "big":  # under the upload cap (4 MB), over the weights cap (2 MB)
        weights = tmp_path / "big.pth"
        torch.save({"x": torch.zeros(800_000)}, weights)
    elif upload is not None:
        weights = tmp_path / upload
        weights.write_text("hello")
    if model == "__local__":  # a weights file that exists on the server, typed as an id
        model = str(make_tiny_model(root / "local", "upscale").bundled)
    with pytest.raises(AppError) as info:
        _upscale(client, photo, model, weights)
    text = str(info.value)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    assert re.search(message, text), text
    assert "pwned" not in capsys.readouterr().out  # the pickle's code never ran
    _serves_normally(client, photo)


def test_models_lists_the_custom_models_tried(server, photo):
    client, _ = server
    _upscale(client, photo, UPSCALE_ID)
    with pytest.raises(AppError):
        _upscale(client, photo, "me/bert/model.bin")
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    esrgan = rows[UPSCALE_ID]
    assert esrgan["custom"] is True and esrgan["task"] == "upscale" and esrgan["arch"] == "rrdbnet"
    assert esrgan["family"].startswith("RRDBNet") and esrgan["hub_repo"] == "me/tiny-esrgan"
    assert esrgan["available"] is True and esrgan["status"] in ("loaded", "not loaded (loads on first use)")
    bert = rows["me/bert/model.bin"]
    assert bert["custom"] is True and bert["available"] is False and "not a CycleGAN" in bert["status"]
    assert rows["tiny-upscale"]["custom"] is False and rows["tiny-upscale"]["family"] is None
    assert "me/tiny-esrgan" in app.models_table(list(rows.values()))


def test_switched_off_custom_models(tmp_path, photo):
    config = app_settings(custom_models=False)
    studio = Studio(specs=build_app_models(tmp_path / "models"), config=config)
    assert CUSTOM_CHOICE not in [value for _, value in studio.choices("upscale")]
    assert app.upload_weights_mb(config) == 0
    with serve(studio.specs, config, tmp_path / "hf") as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        for model in (UPSCALE_ID, CUSTOM_CHOICE):
            with pytest.raises(AppError, match=r"custom models are switched off on this server "
                                               r"\(GAN_STUDIO_CUSTOM_MODELS=0\)"):
                _upscale(client, photo, model)
        _serves_normally(client, photo)


# --- the bounded model cache ---------------------------------------------------------------------------------------


def _local_models(root: Path, count: int) -> list[str]:
    """`count` distinct tiny SR weights files (different seeds), by path."""
    paths = []
    for i in range(count):
        path = root / f"net{i}.pth"
        torch.save(tiny_net("srvgg_compact", seed=i).state_dict(), path)
        paths.append(str(path))
    return paths


def test_cache_keeps_at_most_max_models_and_frees_the_rest(tmp_path):
    cache = ModelCache(build_app_models(tmp_path / "models"), settings=app_settings(max_models=2))
    paths = _local_models(tmp_path, 5)
    refs = []
    for path in paths:
        with cache.use(cache.spec(path, allow_local=True)) as translator:
            refs.append(weakref.ref(translator))
            assert translator(rgb_image(8, 6)).size == (32, 24)
        del translator  # only weak references are kept here
        assert len(cache.loaded()) <= 2
    gc.collect()
    assert cache.loaded() == paths[-2:]
    assert [ref() is None for ref in refs] == [True, True, True, False, False]  # evicted ones are freed
    # the curated defaults are evicted like any other and load again on demand
    cache.get("tiny-upscale")
    assert cache.loaded() == [paths[-1], "tiny-upscale"]
    assert cache.status(cache.specs["tiny-upscale"]) == (True, "loaded")
    assert cache.status(cache.spec(paths[0], allow_local=True))[1] == "not loaded (loads on first use)"


def test_a_model_in_use_is_never_evicted(tmp_path):
    cache = ModelCache(build_app_models(tmp_path / "models"), settings=app_settings(max_models=1))
    paths = _local_models(tmp_path, 3)
    started, release = threading.Event(), threading.Event()

    def long_request() -> None:
        with cache.use(cache.spec(paths[0], allow_local=True)):
            started.set()
            release.wait(30)

    worker = threading.Thread(target=long_request)
    worker.start()
    assert started.wait(30)
    for path in paths[1:]:
        with cache.use(cache.spec(path, allow_local=True)) as translator:
            pass
        # over the bound: the held model stays, the one just used goes, and its caller's reference still works
        assert cache.loaded() == [paths[0]]
        assert translator(rgb_image(8, 6)).size == (32, 24)
    release.set()
    worker.join(30)
    with cache.use(cache.spec(paths[1], allow_local=True)):
        pass
    assert cache.loaded() == [paths[1]]  # no longer in use: evicted like any other


# --- ZeroGPU (deploy) ----------------------------------------------------------------------------------------------


def _handler_fns(demo) -> dict[str, object]:
    return {fn.api_name: fn.fn for fn in demo.fns.values() if fn.api_name in ("style_transfer", "sketch_to_photo",
                                                                               "upscale", "models")}


def test_handlers_run_in_gpu_calls_on_zerogpu_and_plain_elsewhere(tmp_path, monkeypatch, photo):
    specs = build_app_models(tmp_path / "models")
    calls = stub_spaces(monkeypatch)
    fns = _handler_fns(build_demo(specs=specs, config=app_settings(device="cpu")))
    assert all(fns[name].__wrapped__.__name__ == name for name in ("style_transfer", "sketch_to_photo", "upscale"))
    (_, after), png, info = fns["upscale"](str(photo), "tiny-upscale", 2, "auto", None)
    assert _size(png) == (80, 56) and "on cpu" in info
    assert [name for name, _ in calls] == ["upscale"] and calls[0][1] > zerogpu.GPU_START_S
    # a custom model that cannot be had fails in the main process with its one-line error: no GPU call
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    with pytest.raises(gr.Error, match="Model me/tiny-esrgan/RealESRGAN_x4.pth is unavailable"):
        fns["upscale"](str(photo), UPSCALE_ID, 4, "auto", None)
    assert len(calls) == 1
    rows = {row["id"]: row for row in fns["models"]()}
    assert rows["tiny-upscale"]["status"].startswith("loaded · last GPU call: ")
    assert not rows[UPSCALE_ID]["available"]

    monkeypatch.setitem(sys.modules, "spaces", None)  # no spaces package: plain handlers
    plain = _handler_fns(build_demo(specs=specs, config=app_settings()))
    assert {name: getattr(fn, "__wrapped__", None) for name, fn in plain.items()} == dict.fromkeys(plain)


def test_gpu_durations_size_a_custom_model_once_it_is_resolved(tmp_path, photo):
    cache = ModelCache(build_app_models(tmp_path / "models"), settings=app_settings())
    upscale = zerogpu.gpu_durations(cache.known_specs(), max_style_side=64)["upscale"]
    path = _local_models(tmp_path, 1)[0]
    assert upscale(str(photo), path, 4, "auto", None) == zerogpu.GPU_BASE_S  # not seen yet: the base reservation
    spec = cache.spec(path, allow_local=True)
    assert path in cache.known_specs() and "tiny-upscale" in cache.known_specs()
    sized = upscale(str(photo), path, 4, "auto", None)
    pixels = 40 * 28 * 16
    assert sized == zerogpu.gpu_seconds(spec, pixels, encoded_pixels=3 * pixels) > zerogpu.GPU_START_S

"""The Gradio app end to end: the real server, tiny local models, real image files, gradio_client calls.

One server serves the whole module (offline, CPU). Its models are tiny seeded networks written as train.py output
folders, plus three that exercise failure paths: a Hub model with a bundled fallback, a Hub model without one, and a
model whose weights file is corrupt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import EMPTY_CANVAS_MESSAGE, app_specs, build_demo
from gan_models import SPECS, GanModelsError, Settings, WeightsUnavailableError
from gan_models import cache as model_cache
from gan_models.cache import ModelCache
from gan_models.studio import info_line

from .conftest import app_settings, build_app_models, make_tiny_model, rgb_image, serve

PUBLIC_ENDPOINTS = {"/style_transfer", "/sketch_to_photo", "/upscale", "/video", "/models"}
MAX_UPSCALE_PIXELS = 120_000


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app_images")
    paths = {name: root / f"{name}.png" for name in ("rgb", "rgba", "gray", "gray16", "sketch", "blank", "big")}
    rgb_image(40, 28).save(paths["rgb"])
    rgba = rgb_image(36, 20)
    alpha = np.zeros((20, 36), np.uint8)
    alpha[:, 18:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(paths["rgba"])
    rgb_image(30, 22, mode="L").save(paths["gray"])
    Image.fromarray(np.linspace(0, 65535, 24 * 16).reshape(16, 24).astype(np.uint16)).save(paths["gray16"])
    sketch = Image.new("RGB", (100, 80), "white")
    sketch.paste((0, 0, 0), (20, 20, 80, 24))
    sketch.paste((0, 0, 0), (48, 20, 52, 70))
    sketch.save(paths["sketch"])
    Image.new("RGB", (90, 90), "white").save(paths["blank"])
    rgb_image(400, 320).save(paths["big"])  # 128 000 px: over MAX_UPSCALE_PIXELS
    paths["corrupt"] = root / "corrupt.png"
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return paths


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("app_server")
    config = app_settings(concurrency=2, max_upscale_pixels=MAX_UPSCALE_PIXELS, max_style_side=64,
                       max_file_size="1mb", retry_after_s=600)
    with serve(build_app_models(root / "models"), config, root / "hf") as url:
        yield Client(url, verbose=False, download_files=str(root / "downloads"))


def _open(path: str) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_public_api_names(client):
    endpoints = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert endpoints == PUBLIC_ENDPOINTS


def test_models_lists_every_model_with_its_facts(client):
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert set(rows) == {"tiny-style", "hub-style", "tiny-sketch2photo", "tiny-upscale", "hub-upscale",
                         "broken-upscale"}
    assert rows["tiny-upscale"]["task"] == "upscale" and rows["tiny-upscale"]["bundled"] is True
    assert rows["hub-style"]["hub_repo"] == "nobody/not-a-real-repo" and rows["hub-style"]["bundled"] is False
    assert all(isinstance(row["available"], bool) and row["status"] for row in rows.values())


def test_style_transfer_keeps_size_and_reports_the_run(client, files):
    out, info = client.predict(handle_file(files["rgb"]), "tiny-style", "original", api_name="/style_transfer")
    img = _open(out)
    assert img.size == (40, 28) and img.mode == "RGB"
    assert "tiny-style" in info and ("torch on cpu" in info or "torch on cuda" in info) and " s " in info


def test_style_transfer_output_sizes_and_alpha(client, files):
    out, _ = client.predict(handle_file(files["rgba"]), "tiny-style", "256", api_name="/style_transfer")
    img = _open(out)
    assert img.mode == "RGBA" and min(img.size) == 256 and img.size == (461, 256)
    out, _ = client.predict(handle_file(files["big"]), "tiny-style", "original", api_name="/style_transfer")
    assert _open(out).size == (64, 51)  # "original" is capped at max_style_side


def test_hub_model_falls_back_to_the_bundled_one_offline(client, files):
    out, info = client.predict(handle_file(files["rgb"]), "hub-style", "original", api_name="/style_transfer")
    assert _open(out).size == (40, 28)
    assert "Hub unreachable for hub-style" in info and "tiny-style" in info
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["hub-style"]["available"] and rows["hub-style"]["status"].startswith("fallback")


def test_sketch_to_photo_fits_the_model_size(client, files):
    sketch = {"background": handle_file(files["sketch"]), "layers": [], "composite": None}
    out, info = client.predict(sketch, "tiny-sketch2photo", True, api_name="/sketch_to_photo")
    assert _open(out).size == (80, 64)  # short side = the model's input_size (64)
    assert "tiny-sketch2photo" in info
    out, _ = client.predict(sketch, "tiny-sketch2photo", False, api_name="/sketch_to_photo")
    assert _open(out).size == (100, 80)


@pytest.mark.parametrize("which", ["blank", None])
def test_empty_canvas_is_a_plain_error(client, files, which):
    sketch = None if which is None else {"background": None, "layers": [], "composite": handle_file(files[which])}
    with pytest.raises(AppError, match=EMPTY_CANVAS_MESSAGE):
        client.predict(sketch, "tiny-sketch2photo", True, api_name="/sketch_to_photo")


@pytest.mark.parametrize(
    ("name", "outscale", "tile", "mode", "size"),
    [
        ("rgb", 4, "auto", "RGB", (160, 112)),
        ("rgb", 2, "none", "RGB", (80, 56)),
        ("rgb", 3, "128", "RGB", (120, 84)),
        ("rgba", 4, "auto", "RGBA", (144, 80)),
        ("gray", 4, "auto", "L", (120, 88)),
        ("gray16", 2, "auto", "I;16", (48, 32)),
    ],
)
def test_upscale_sizes_and_modes(client, files, name, outscale, tile, mode, size):
    (before, after), png, info = client.predict(handle_file(files[name]), "tiny-upscale", outscale, tile,
                                                api_name="/upscale")
    full = _open(png)
    assert Path(png).suffix == ".png"
    assert full.size == size
    assert full.mode == mode or (mode == "I;16" and full.mode in ("I;16", "I"))
    if mode == "I;16":
        assert np.asarray(full).max() > 255  # the download keeps 16-bit values
    preview_after, preview_before = _open(after), _open(before)
    assert preview_after.size == preview_before.size == size
    assert preview_after.mode in ("L", "LA", "RGB", "RGBA")  # 8-bit preview: 16-bit shows white in browsers
    if mode == "RGBA":
        assert "A" in preview_after.getbands() and np.asarray(full.getchannel("A"))[:, :60].max() < 16
    assert "tiny-upscale" in info


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [
        ("corrupt", "tiny-upscale", "not a readable image"),
        ("big", "tiny-upscale", "too large"),
        ("rgb", "broken-upscale", "broken-upscale is unavailable"),
        ("rgb", "hub-upscale", "hub-upscale is unavailable"),
        ("rgb", "no-such-model", "unknown model 'no-such-model'; choose one of: .*; or give a Hub id"),
        ("rgb", "tiny-style", "tiny-style is a style model, not for upscale; choose one of: tiny-upscale, "),
        ("rgb", "/etc/passwd", "local files are not accepted here"),
    ],
)
def test_bad_requests_get_plain_messages_and_the_server_keeps_serving(client, files, name, model, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(files[name]), model, 4, "auto", api_name="/upscale")
    (_, after), _, _ = client.predict(handle_file(files["rgb"]), "tiny-upscale", 2, "auto", api_name="/upscale")
    assert _open(after).size == (80, 56)


def test_broken_model_is_marked_unavailable(client, files):
    with pytest.raises(AppError):
        client.predict(handle_file(files["rgb"]), "broken-upscale", 4, "auto", api_name="/upscale")
    rows = {row["id"]: row for row in client.predict(api_name="/models")}
    assert rows["broken-upscale"]["available"] is False and "unavailable" in rows["broken-upscale"]["status"]
    assert rows["tiny-upscale"]["available"] is True


def test_uploads_over_the_size_cap_are_refused(client, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)  # ~1.5 MB of incompressible pixels; the test server's cap is 1 MB
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(path), "tiny-upscale", 2, "auto", api_name="/upscale")


def test_concurrent_requests_all_finish(client, files):
    jobs = [client.submit(handle_file(files["rgb"]), "tiny-upscale", 2, "auto", api_name="/upscale")
            for _ in range(3)]
    for job in jobs:
        (_, after), _, _ = job.result(timeout=60)
        assert _open(after).size == (80, 56)


def test_config_reads_the_environment():
    config = Settings.from_env({"GAN_STUDIO_CONCURRENCY": "3", "GAN_STUDIO_DEVICE": "cpu",
                                 "GRADIO_MCP_SERVER": "true", "GAN_STUDIO_MAX_FILE_SIZE": "10mb"})
    assert (config.concurrency, config.device, config.mcp, config.max_file_size) == (3, "cpu", True, "10mb")
    assert dataclasses.replace(Settings.from_env({}), threads=0) == Settings()
    assert Settings.from_env({"GAN_STUDIO_THREADS": "3"}).threads == 3


@pytest.mark.parametrize("first", ["hub-style", "tiny-style"])
def test_cache_shares_one_fallback_model_and_remembers_failures(tmp_path, offline_hub, monkeypatch, first):
    calls: list[str] = []
    real_load = model_cache.load_model
    monkeypatch.setattr(model_cache, "load_model", lambda spec, **kw: (calls.append(spec.id), real_load(spec, **kw))[1])
    cache = ModelCache(build_app_models(tmp_path), settings=app_settings(retry_after_s=600))
    cache.get(first)
    hub, own = cache.get("hub-style"), cache.get("tiny-style")
    assert hub.backend is own.backend  # one copy of the fallback model serves both
    assert hub.spec.id == own.spec.id == "tiny-style" and own.fallback_reason is None
    assert hub.fell_back and "Hub unreachable for hub-style" in hub.fallback_reason
    assert cache.status(cache.specs["hub-style"]) == (True, f"fallback: {hub.fallback_reason}")

    with pytest.raises(WeightsUnavailableError, match="hub-upscale") as info:
        cache.get("hub-upscale")
    with pytest.raises(WeightsUnavailableError) as again:
        cache.get("hub-upscale")
    assert again.value is info.value  # remembered for retry_after_s: no second attempt
    # Loading hub-style first also made tiny-style's entry, from the model its fallback had just loaded.
    assert sorted(calls) == ["hub-style", "hub-upscale"] + (["tiny-style"] if first == "tiny-style" else [])


def test_building_the_app_loads_no_model(monkeypatch, tmp_path):
    calls: list[object] = []
    monkeypatch.setattr(model_cache, "load_model", lambda *args, **kwargs: calls.append(args))
    build_demo(specs=build_app_models(tmp_path), config=app_settings())
    assert calls == []


def test_weights_flag_adds_local_models_to_their_tab(tmp_path):
    run = tmp_path / "my-run"
    spec = make_tiny_model(run / "final", "upscale")  # a train.py run folder: the generator is in final/
    specs = app_specs([str(run)])
    assert set(specs) == set(SPECS) | {spec.id}
    assert specs[spec.id].task == "upscale" and specs[spec.id].bundled == spec.bundled

    with pytest.raises(GanModelsError, match=r"--weights .*missing: unknown model"):
        app_specs([str(tmp_path / "missing")])
    clash = make_tiny_model(tmp_path / "clash", "upscale")
    config = (tmp_path / "clash" / "config.json")
    config.write_text(config.read_text().replace(f'"{clash.id}"', '"default-upscale-x4"'))
    with pytest.raises(GanModelsError, match="already taken"):
        app_specs([str(tmp_path / "clash")])


def test_info_line_names_a_reduced_precision(tmp_path):
    spec = build_app_models(tmp_path)["tiny-style"]
    for precision, shown in (("fp32", "· onnxruntime on cpu ·"), ("int8", "· onnxruntime int8 on cpu ·")):
        backend = SimpleNamespace(name="onnxruntime", device="cpu", precision=precision)
        translator = SimpleNamespace(spec=spec, source=None, fallback_reason=None, backend=backend)  # pinned
        assert shown in info_line(translator, 0.5, Image.new("RGB", (8, 8)), requested=spec.id)

"""A public Space survives its visitors (issue 19): every case a hostile visitor can send ends in one clear line or a
bounded result, visitors never see each other's uploads or any server path, and the app keeps serving.

The fast tests call the app's handlers in this process; the `slow` one runs bench/abuse.py's cases against a live
`python app.py` on loopback with an RSS watchdog (tiny settings: 5 MB weights cap, a 1024 MB request budget).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData

import app
from gan_models import cache as cache_module
from gan_models import custom
from gan_models.archs import build_arch
from tests.conftest import app_settings, rgb_image
from tests.test_app import build_app_models


@pytest.fixture(autouse=True)
def _fresh_cache():
    custom.clear_cache()
    yield
    custom.clear_cache()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    return build_app_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def studio(models) -> app.Studio:
    return app.Studio(specs=models, config=app_settings(max_weights_mb=5))


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "photo.png"
    rgb_image(40, 28).save(path)
    return str(path)


def _visitor(name: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)  # what handlers read of gr.Request


def _upload(tmp_path: Path, name: str, state: dict) -> str:
    """A weights file where Gradio keeps uploads: a temporary folder per upload."""
    path = tmp_path / "gradio" / "5f3a9c" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return str(path)


def _x64() -> dict:
    return build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=64,
                      act_type="prelu").state_dict()


def test_a_refused_upload_is_deleted_and_seen_only_by_its_visitor(studio, photo, tmp_path):
    upload = _upload(tmp_path, "secret-x64.pth", _x64())
    with pytest.raises(gr.Error) as info:
        studio.upscale(photo, "custom", 4, "auto", upload, request=_visitor("a"))
    assert info.value.message == "secret-x64.pth: an x64 network is over this server's limit of x8"
    assert not Path(upload).exists()  # nobody can fetch it through Gradio's file route afterwards
    own = [row for row in studio.models(request=_visitor("a")) if row["custom"]]
    assert [row["id"] for row in own] == ["secret-x64.pth"] and str(tmp_path) not in str(own)
    other = studio.models(request=_visitor("b"))
    assert not [row for row in other if row["custom"]] and "secret" not in str(other)


def test_a_custom_model_that_works_is_listed_for_its_visitor_only(studio, photo, tmp_path):
    state = build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=2,
                       act_type="prelu").state_dict()
    upload = _upload(tmp_path, "mine-x2.pth", state)
    studio.upscale(photo, "custom", 2, "auto", upload, request=_visitor("a"))
    assert Path(upload).exists()  # a working upload stays: the model reloads from it
    assert [r["id"] for r in studio.models(request=_visitor("a")) if r["custom"]] == ["mine-x2.pth"]
    assert not [r for r in studio.models(request=_visitor("b")) if r["custom"]]


def test_visitors_custom_models_stay_on_torch_when_their_preparation_is_off(models, photo, tmp_path, monkeypatch):
    studio = app.Studio(specs=models, config=app_settings(backend="auto", prepare_custom=False))
    asked = []
    real = cache_module.build_translator
    monkeypatch.setattr(cache_module, "build_translator", lambda loaded, **k: asked.append((loaded.spec.id,
                                                                                             k["backend"]))
                        or real(loaded, **{**k, "backend": "torch"}))
    state = build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=2,
                       act_type="prelu").state_dict()
    upload = _upload(tmp_path, "x2.pth", state)
    studio.upscale(photo, "custom", 2, "auto", upload)
    studio.upscale(photo, "tiny-upscale", 4, "auto", None)
    assert asked == [(upload, "torch"), ("tiny-upscale", "auto")]


def test_the_settings_panel_shows_no_server_path(studio, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    text = studio.runtime()
    assert "hf-home" not in text and "/" not in text.replace("÷", "").replace("ids and uploads", "")
    assert "**Memory per request:** 4,096 MB" in text


@pytest.mark.parametrize(("model", "message"), [
    (123, "model must be a model id (text), not int"),
    (["x"], "model must be a model id (text), not list"),
    ("owner/name//etc/passwd.pth", "'.' and '..' are not allowed in a Hub file path, nor empty parts"),
    ("tiny-upscale?tile=64", "unknown model"),
    ("me/repo/x.pth?tile=64&tile=2000", "option tile is given twice"),
    ("me/repo/x.pth?scale=1000", "scale must be between 1 and 8, not 1000"),
    ("me/repo/x.pth?range=0,inf", "range values must be finite numbers"),
])
def test_bad_model_values_get_one_line(studio, photo, model, message, offline_hub):
    with pytest.raises(gr.Error) as info:
        studio.upscale(photo, model, 4, "auto", None, request=_visitor("a"))
    assert message in info.value.message and "\n" not in info.value.message


def test_unexpected_errors_get_one_line_without_server_paths(studio, photo, monkeypatch):
    def deep(*_args, **_kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(app.imaging, "load_image", deep)
    with pytest.raises(gr.Error) as info:
        studio.upscale(photo, "tiny-upscale", 4, "auto", None)
    assert info.value.message == "The input is nested too deeply to be read"

    def bug(*_args, **_kwargs):
        raise ValueError("cannot open /srv/uploads/abc123/visitor.png\nTraceback ...")

    monkeypatch.setattr(app.imaging, "load_image", bug)
    with pytest.raises(gr.Error) as info:
        studio.upscale(photo, "tiny-upscale", 4, "auto", None)
    assert info.value.message == "The request failed (ValueError: cannot open visitor.png)"


def test_a_request_over_the_memory_budget_is_refused_before_work(models, tmp_path, monkeypatch):
    studio = app.Studio(specs=models, config=app_settings(request_memory_mb=40))
    big = tmp_path / "big.png"
    rgb_image(600, 600).save(big)
    ran = []
    monkeypatch.setattr(app.Translator, "run_array", lambda *a, **k: ran.append(1))
    with pytest.raises(gr.Error) as info:
        studio.upscale(str(big), "tiny-upscale", 4, "auto", None)
    assert info.value.message.startswith("a 600x600 input at x4 needs about ")
    assert "over this server's 40 MB per request (GAN_STUDIO_REQUEST_MEMORY_MB)" in info.value.message
    assert ran == []


def test_a_large_input_is_tiled_to_fit_the_budget(models, tmp_path, monkeypatch):
    studio = app.Studio(specs=models, config=app_settings(request_memory_mb=200))
    image = tmp_path / "img.png"
    rgb_image(500, 400).save(image)
    tiles = []
    real = app.Translator.__call__

    def spy(self, img, *, tile="auto", **kwargs):
        tiles.append(tile)
        return real(self, img, tile=tile, **kwargs)

    monkeypatch.setattr(app.Translator, "__call__", spy)
    studio.upscale(str(image), "tiny-upscale", 4, "none", None)
    assert isinstance(tiles[0], int) and tiles[0] < 500  # "none" asked; the whole image would not fit


def test_the_canvas_decodes_one_image_however_many_layers_point_at_it(tmp_path, monkeypatch):
    sketch = tmp_path / "sketch.png"
    rgb_image(64, 64).save(sketch)
    canvas = app.SketchInput(type="pil", image_mode="RGB", format="png")
    decoded = []
    real = app.imaging.load_image
    monkeypatch.setattr(app.imaging, "load_image", lambda f, **k: decoded.append(f) or real(f, **k))
    one = FileData(path=str(sketch))
    value = canvas.preprocess(EditorData(background=one, layers=[one] * 12, composite=one))
    assert decoded == [str(sketch)] and value["layers"] == [] and value["composite"].size == (64, 64)


def test_the_canvas_refuses_a_composite_over_the_pixel_limit_before_decoding(tmp_path):
    sketch = tmp_path / "big.png"
    rgb_image(300, 300).save(sketch)
    canvas = app.SketchInput(type="pil", image_mode="RGB", format="png")
    canvas.max_pixels = 10_000
    with pytest.raises(gr.Error, match="too large"):
        canvas.preprocess(EditorData(background=None, layers=[FileData(path=str(sketch))] * 3,
                                     composite=FileData(path=str(sketch))))


@pytest.mark.slow
def test_hostile_visitor_cases_against_a_live_app(tmp_path):
    """Every case ends in one clear line or a bounded result; peak RSS over the app's RSS before the case stays
    under the request budget plus a stated margin; the app answers the next request."""
    from bench import abuse

    budget_mb, margin_mb = 1024, 512
    files = abuse.write_files(tmp_path)
    with abuse.live_app(abuse.REPO, tmp_path, budget_mb=budget_mb, kill_mb=6144) as (url, watchdog, _):
        assert abuse.privacy(url, files) == []
        for name, endpoint, make in abuse.cases(files, heavy=False):
            outcome, _, peak_mb, answered = abuse.run_case(url, watchdog, endpoint, make, timeout_s=120)
            assert "upstream" not in outcome and "killed" not in outcome and "Traceback" not in outcome, name
            assert "/tmp" not in outcome and str(tmp_path) not in outcome, name
            assert peak_mb < budget_mb + margin_mb, (name, peak_mb)
            assert answered, name
    shutil.rmtree(tmp_path / "gradio", ignore_errors=True)

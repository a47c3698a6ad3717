"""Rules every custom model follows whatever its family: the 1x rule, tiles for window attention, inputs never
mutated, visitor-facing messages without server paths, URLs through the app's cache (no server: Studio directly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import app
from app import CUSTOM_CHOICE, Studio
from gan_models import Translator, custom, urlfetch
from gan_models.archs import build_arch
from gan_models.cache import ModelCache
from gan_models.detect import detect_network
from gan_models.runtimes import TorchBackend
from gan_models.specs import get_spec
from gan_models.weights import load_model
from tests.conftest import TINY_KWARGS, app_settings, make_tiny_model, rgb_image
from tests.test_app import build_app_models


@pytest.fixture(autouse=True)
def _fresh_cache():
    custom.clear_cache()
    yield
    custom.clear_cache()


def _spandrel_state(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    if name == "NAFNet":
        from spandrel.architectures.NAFNet import NAFNet

        return NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]).state_dict()
    if name == "SCUNet":
        from spandrel.architectures.SCUNet import SCUNet

        return SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=8).state_dict()
    if name == "SwinIR":
        from spandrel.architectures.SwinIR import SwinIR

        return SwinIR(img_size=16, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0,
                      upscale=2, upsampler="pixelshuffledirect", img_range=1.0).state_dict()
    from spandrel.architectures.RCAN import RCAN

    return RCAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4).state_dict()


@pytest.mark.parametrize("name", ["SwinIR", "SCUNet"])
def test_window_attention_networks_are_tiled(name):
    detection = detect_network(_spandrel_state(name))
    assert detection.tile == 256 and detection.task == "upscale"


def test_one_x_restoration_models_are_upscale_models_in_every_door(tmp_path):
    """The 1x rule (docs/custom-models.md): SR/restoration families are "upscale" at any scale."""
    path = tmp_path / "1x_nafnet.pth"
    torch.save({"params": _spandrel_state("NAFNet")}, path)
    spec = get_spec(str(path))
    assert (spec.task, spec.scale) == ("upscale", 1)
    studio = Studio(specs=build_app_models(tmp_path / "models"), config=app_settings())
    photo = tmp_path / "photo.png"
    rgb_image(20, 12).save(photo)
    _, png, info = studio.upscale(str(photo), CUSTOM_CHOICE, outscale=1, weights_file=str(path))
    assert "1x_nafnet.pth" in info
    from PIL import Image

    assert Image.open(png).size == (20, 12)
    with pytest.raises(app.gr.Error, match=r"1x_nafnet\.pth is an upscale model, not for style"):
        studio.style_transfer(str(photo), CUSTOM_CHOICE, weights_file=str(path))


class _InPlace(nn.Module):
    """Works on its input in place, as spandrel's RCAN does (x *= rgb_range)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(255.0)
        return x / 255.0


@pytest.mark.parametrize("tile", [None, 8])
def test_run_array_never_changes_the_callers_array(tmp_path, tile):
    spec = make_tiny_model(tmp_path, "upscale")
    spec = spec.__class__(**{**spec.__dict__, "scale": 1, "size_multiple": 1, "tile_overlap": 2})
    x = np.random.default_rng(0).random((1, 3, 20, 12), dtype=np.float32)
    before = x.copy()
    y = Translator(spec, TorchBackend(_InPlace(), device="cpu")).run_array(x, tile=tile)
    assert np.array_equal(x, before)
    np.testing.assert_allclose(y, before, atol=1e-6)  # tiles saw their true input too


def test_rcan_via_spandrel_leaves_the_input_alone(tmp_path):
    path = tmp_path / "rcan.pth"
    torch.save(_spandrel_state("RCAN"), path)
    spec = get_spec(str(path))
    x = np.random.default_rng(0).random((1, 3, 12, 10), dtype=np.float32)
    before = x.copy()
    Translator(spec, TorchBackend(load_model(spec).module, device="cpu")).run_array(x, tile=None)
    assert np.array_equal(x, before)


def test_upload_errors_name_the_file_not_the_server_path(tmp_path):
    studio = Studio(specs=build_app_models(tmp_path / "models"), config=app_settings())
    upload = tmp_path / "gradio" / "0123abcd" / "my_model.pth"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"\x13\x37" * 500)
    photo = tmp_path / "photo.png"
    rgb_image(20, 12).save(photo)
    with pytest.raises(app.gr.Error) as info:
        studio.upscale(str(photo), CUSTOM_CHOICE, weights_file=str(upload))
    message = info.value.message
    assert message.endswith("Details: my_model.pth: not a weights file (neither safetensors nor a PyTorch "
                            "checkpoint)"), message
    assert str(tmp_path) not in message


def test_the_app_passes_its_url_allow_list(tmp_path, monkeypatch):
    seen = {}

    def fetch(url, **kwargs):
        seen.update(kwargs, url=url)
        raise urlfetch.UnsupportedModelError(f"{url}: refused for the test")

    monkeypatch.setattr("gan_models.resolve.fetch_url", fetch)
    cache = ModelCache(build_app_models(tmp_path / "models"), settings=app_settings(url_hosts=("example.org",)))
    with pytest.raises(urlfetch.UnsupportedModelError, match="refused for the test"):
        cache.spec("https://example.org/x4.pth#G_B?sha256=" + "a" * 64)
    assert seen["url"] == "https://example.org/x4.pth" and seen["allowed_hosts"] == ("example.org",)
    assert seen["sha256"] == "a" * 64


def test_custom_models_get_the_same_background_runtime_choice_as_curated_ones(tmp_path, monkeypatch):
    submitted = []
    monkeypatch.delenv("GAN_STUDIO_BACKEND")  # the test run forces torch; here "auto" must mean auto
    monkeypatch.setattr("gan_models.pipeline.prepare_in_background",
                        lambda loaded, **kwargs: submitted.append(loaded.spec.id))
    path = tmp_path / "4x_compact.pth"  # a custom file (Real-ESRGAN's layout), detected, not curated
    torch.save({"params": build_arch("srvgg_compact", **TINY_KWARGS["srvgg_compact"]).state_dict()}, path)
    cache = ModelCache(build_app_models(tmp_path / "models"), settings=app_settings(backend="auto"))
    for model_id in ("tiny-upscale", str(path)):
        with cache.use(cache.spec(model_id, allow_local=True)) as translator:
            assert translator.backend.name == "torch"  # answers at once; the job switches it when done
    assert submitted == ["tiny-upscale", str(path)]


@pytest.mark.slow
def test_export_parity_is_not_fooled_by_a_network_that_scales_its_input_in_place(tmp_path):
    from gan_models.runtimes.onnx_export import export_model

    spec = make_tiny_model(tmp_path / "m", "upscale")
    spec = spec.__class__(**{**spec.__dict__, "scale": 1, "size_multiple": 1})
    (result,) = export_model(spec, tmp_path / "onnx", module=_InPlace().eval(), force=True)
    assert result.passed, result

"""The per-request memory budget (gan_models.budget), the bounded background preparation and the ONNX cache's
names and size cap."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid

import pytest
import torch
from torch import nn

from gan_models import budget, tiling
from gan_models.archs import build_arch
from gan_models.errors import UnsupportedModelError
from gan_models.runtimes import Preparer, disk_cache
from gan_models.runtimes import worker as worker_module
from gan_models.settings import Settings
from gan_models.specs import ModelSpec
from gan_models.weights import LoadedModel, WeightsSource
from tests.conftest import tiny_spec_fields


def _spec(task: str = "upscale", **changes) -> ModelSpec:
    fields = tiny_spec_fields(task)
    fields["value_range"] = tuple(fields["value_range"])
    return ModelSpec(**{**fields, "id": f"budget-{uuid.uuid4().hex[:8]}", **changes})  # profiles are kept by id


def test_the_meta_count_is_the_peak_of_live_activations():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    spec = _spec("style", tile=None, size_multiple=1)
    prof = budget.profile(net, spec)
    # conv1's output and the ReLU's are alive at once (8 channels x 64 x 64 floats, twice); then conv1's is freed
    peak = 2 * 8 * 64 * 64 * 4
    assert prof.probe_side == 64 and prof.layers == 3
    assert prof.activation_bytes_per_pixel == pytest.approx(peak * budget.ACTIVATION_FACTOR / 64**2)
    assert prof.weight_bytes == sum(p.numel() * 4 for p in net.parameters())
    assert budget.known_profile(spec) is prof


def test_a_skip_connection_keeps_its_input_alive():
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.a(x)
            return y + self.b(y)

    prof = budget.profile(Skip(), _spec("style", tile=None, size_multiple=1))
    assert prof.activation_bytes_per_pixel == pytest.approx(3 * 8 * 4 * budget.ACTIVATION_FACTOR)


def test_a_network_the_meta_device_cannot_run_gets_a_conservative_count(caplog):
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y * float(y.mean().item())  # needs real values

    spec = _spec("style", tile=None, size_multiple=1, scale=1)
    net = DataDependent()
    prof = budget.profile(net, spec)
    assert prof.activation_bytes_per_pixel == pytest.approx(budget.FALLBACK_MAPS * 16 * 4 * budget.ACTIVATION_FACTOR)
    assert "cannot count its activations on the meta device" in caplog.text
    assert net.conv.weight.device.type == "cpu"  # the network itself was never touched


def _srvgg(**kwargs) -> nn.Module:
    return build_arch("srvgg_compact", **{"num_in_ch": 3, "num_out_ch": 3, "num_feat": 16, "num_conv": 4,
                                          "upscale": 4, "act_type": "prelu", **kwargs}).eval()


def test_a_small_input_runs_as_asked():
    spec = _spec()
    plan = budget.check_request(spec, 40, 40, tile="auto", outscale=None, budget_mb=512, module=_srvgg())
    assert plan.tile == "auto" and plan.estimate_bytes < 512 * 2**20
    assert budget.check_request(spec, 40, 40, tile=None, outscale=None, budget_mb=512).tile is None


def test_a_large_input_gets_a_tile_that_fits():
    spec = _spec()
    prof = budget.profile(_srvgg(), spec)
    plan = budget.check_request(spec, 2000, 2000, tile=None, outscale=4, budget_mb=3072)
    assert isinstance(plan.tile, int) and budget.MIN_TILE <= plan.tile < 2000
    assert plan.estimate_bytes <= 3072 * 2**20
    assert budget.run_bytes(prof, spec, 2000, 2000, plan.tile + 64, 4) > 3072 * 2**20 or plan.tile >= 2000 - 64
    asked = budget.check_request(spec, 2000, 2000, tile=128, outscale=4, budget_mb=3072)
    assert asked.tile == 128  # a tile that fits is kept
    auto = budget.check_request(spec, 2000, 2000, tile="auto", outscale=4, budget_mb=3072, auto_budget_mb=64)
    assert auto.tile == tiling.auto_tile(2000, 2000, scale=4, budget_bytes=64 * 2**20, multiple=1) < plan.tile


def test_an_output_over_the_budget_is_refused_in_one_line():
    spec = _spec()
    budget.profile(_srvgg(), spec)
    with pytest.raises(budget.OverBudgetError) as info:
        budget.check_request(spec, 2000, 2000, tile="auto", outscale=4, budget_mb=512)
    text = str(info.value)
    assert text.startswith("a 2000x2000 input at x4 needs about ") and "(the result alone)" in text
    assert "over this server's 512 MB per request (GAN_STUDIO_REQUEST_MEMORY_MB)" in text and "\n" not in text


def test_a_network_that_must_see_the_whole_image_is_refused_not_tiled():
    spec = _spec("style", tile=None)
    budget.profile(build_arch("resnet_generator", in_channels=3, out_channels=3, ngf=8, n_blocks=1), spec)
    assert budget.check_request(spec, 256, 256, tile="auto", outscale=None, budget_mb=512).tile is None
    with pytest.raises(budget.OverBudgetError, match="this network sees the whole image at once"):
        budget.check_request(spec, 4000, 4000, tile="auto", outscale=None, budget_mb=512)


def test_too_many_layers_are_refused(monkeypatch):
    monkeypatch.setattr(budget, "MAX_LAYERS", 5)
    with pytest.raises(UnsupportedModelError, match="layers, over this server's limit of 5"):
        budget.profile(_srvgg(), _spec(id="many-layers"))


def _loaded(tmp_path, spec: ModelSpec) -> LoadedModel:
    return LoadedModel(spec=spec, module=_srvgg(), source=WeightsSource(path=tmp_path / "x", origin="local",
                                                                        spec_id=spec.id))


def test_a_preparation_over_free_memory_is_skipped_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_module, "run_tournament", lambda *a, **k: pytest.fail("ran"))
    preparer = Preparer(root=tmp_path, free_bytes=lambda: 64 * 2**20)
    spec = _spec()
    job = preparer.submit(_loaded(tmp_path, spec), device="cpu")
    assert job.wait(60)
    assert job.error.startswith("skipped: preparing Tiny upscale needs about ")
    assert "more than half of the 64 MB free now; it stays on torch" in job.error
    assert preparer.ready(_loaded(tmp_path, spec), device="cpu") is None  # not remembered: estimated again next time


def test_cache_folders_of_uploads_are_named_by_the_weights_hash(tmp_path):
    a, b = tmp_path / "gradio" / "abc" / "my x4.pth", tmp_path / "gradio" / "def" / "my x4.pth"
    for path in (a, b):
        path.parent.mkdir(parents=True)
    torch.save(_srvgg().state_dict(), a)
    b.write_bytes(a.read_bytes())  # the same upload from another visitor: another temporary folder
    spec_a = dataclasses.replace(_spec(), id=str(a), bundled=a)
    spec_b = dataclasses.replace(_spec(), id=str(b), bundled=b)
    name = disk_cache.folder_name(spec_a)
    assert name == disk_cache.folder_name(spec_b) and name.startswith("my_x4.pth-") and len(name) == 26
    assert "gradio" not in name and disk_cache.folder_name(_spec(id="default-upscale-x4")) == "default-upscale-x4"


def test_the_cache_is_pruned_least_recently_used_first(tmp_path):
    now = time.time()
    for i, name in enumerate(["old", "mid", "new"]):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "m.onnx").write_bytes(b"\0" * 1000)
        os.utime(folder, (now - 100 + i, now - 100 + i))
    assert disk_cache.prune(tmp_path, 2500, keep=tmp_path / "old") == ["mid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
    assert disk_cache.prune(tmp_path, 5000) == []


def test_the_new_settings_come_from_the_environment():
    config = Settings.from_env({"GAN_STUDIO_REQUEST_MEMORY_MB": "512", "GAN_STUDIO_PREPARE_CUSTOM": "0",
                                "GAN_STUDIO_ONNX_CACHE_MB": "100"})
    assert (config.request_memory_mb, config.prepare_custom, config.onnx_cache_mb) == (512, False, 100)
    assert (Settings().request_memory_mb, Settings().prepare_custom, Settings().onnx_cache_mb) == (4096, True, 2048)

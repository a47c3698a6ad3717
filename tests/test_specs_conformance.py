"""One conformance suite over every spec in SPECS: build, shapes, scale, range, round trip, real-layout loads."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from huggingface_hub import hf_hub_download

from gan_models import SPECS, ModelSpec, get_spec, load_model
from gan_models.errors import UnknownModelError, WeightsUnavailableError
from gan_models.files import sha256_file
from gan_models.specs import WEIGHTS_DIR
from gan_models.weights import build_generator, read_state_dict, resolve_weights, save_model_folder

from .conftest import hub_cache_path, tiny_variant

SPEC_IDS = list(SPECS)
HUB_SPECS = [k for k, s in SPECS.items() if s.repo_id is not None]


def test_specs_cover_the_offer():
    tasks = {s.task for s in SPECS.values()}
    assert tasks == {"style", "sketch2photo", "upscale"}
    styles = {k for k, s in SPECS.items() if s.task == "style"}
    assert {"style-monet", "style-vangogh", "style-cezanne", "style-ukiyoe", "horse2zebra", "zebra2horse"} <= styles
    assert len([s for s in SPECS.values() if s.task == "sketch2photo"]) >= 3
    upscalers = [s for s in SPECS.values() if s.task == "upscale"]
    assert {s.arch for s in upscalers} >= {"srresnet", "rrdbnet"}
    for task in tasks:  # each tab works offline on a bundled model
        assert any(s.is_bundled for s in SPECS.values() if s.task == task)


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_spec_is_consistent(spec_id):
    spec = SPECS[spec_id]
    assert spec.id == spec_id
    assert spec.licence and spec.title and spec.description
    if spec.repo_id is not None:
        assert spec.filename and spec.revision
        assert spec.repo_type in {"model", "space"}
        for hub in spec.sources:  # every location, not only the first
            assert hub.repo_id.count("/") == 1 and hub.filename and hub.revision
            assert hub.repo_type in {"model", "space"}
        assert len(set(spec.sources)) == len(spec.sources)
        assert spec.fallback in SPECS and SPECS[spec.fallback].is_bundled
        assert SPECS[spec.fallback].task == spec.task
    else:
        assert spec.bundled is not None and spec.bundled.suffix == ".safetensors"
    assert spec.value_range in {(-1.0, 1.0), (0.0, 1.0)}
    if spec.task == "upscale":
        assert spec.scale in (2, 4, 8) and spec.tile is not None
    else:
        assert spec.scale == 1 and spec.tile is None  # InstanceNorm nets see the whole image


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_full_size_network_shapes_and_range(spec_id):
    spec = SPECS[spec_id]
    model = build_generator(spec).eval()
    side = max(spec.size_multiple, 16)
    x = torch.rand(1, 3, side, side + spec.size_multiple) * (spec.value_range[1] - spec.value_range[0])
    x = x + spec.value_range[0]
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, side * spec.scale, (side + spec.size_multiple) * spec.scale)
    assert torch.isfinite(y).all()
    if spec.value_range == (-1.0, 1.0):  # Tanh head
        assert y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_safetensors_round_trip(spec_id, tmp_path):
    spec = tiny_variant(SPECS[spec_id])
    model = build_generator(spec)
    save_model_folder(model, tmp_path, spec_fields={"id": spec.id})
    state = read_state_dict(tmp_path / "model.safetensors")
    assert state.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key


def _real_layout_checkpoint(spec: ModelSpec, model: torch.nn.Module) -> dict:
    """The dict the real Hub file holds, in the layout its publisher's code writes (see each spec's `source`)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if spec.arch == "resnet_generator" and spec.key_prefix is None:
        # Old junyanz files carry InstanceNorm running stats the network has no buffers for.
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                state[f"{name}.running_mean"] = torch.zeros(module.num_features)
                state[f"{name}.running_var"] = torch.ones(module.num_features)
        return state
    if spec.key_prefix == "G_B.":  # tmabraham: all four CycleGAN nets in one file
        other = {k: torch.randn_like(v) for k, v in state.items()}
        return {
            **{f"G_B.{k}": v for k, v in state.items()},
            **{f"G_A.{k}": v for k, v in other.items()},
            "D_A.model.0.weight": torch.zeros(4, 3, 4, 4),
            "D_B.model.0.weight": torch.zeros(4, 3, 4, 4),
        }
    if spec.id == "realesrgan-x4plus":
        return {"params_ema": state}
    if spec.arch == "srresnet":  # SRGAN-PyTorch training checkpoints: wrapped, compiled-model prefixes
        return _srgan_training_checkpoint(state)
    return state


def _srgan_training_checkpoint(state: dict) -> dict:
    """Lornatang/SRGAN-PyTorch's training checkpoint: the generator under state_dict (torch.compile'd keys), its EMA
    copy (AveragedModel keys), the optimizer and the epoch's figures."""
    ema = {f"module.{k}": torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    return {"epoch": 7, "psnr": 28.5, "ssim": 0.8, "state_dict": {f"_orig_mod.{k}": v for k, v in state.items()},
            "ema_state_dict": {**ema, "n_averaged": torch.tensor(5)}, "optimizer": optimizer}


@pytest.mark.parametrize("spec_id", HUB_SPECS)
def test_strict_load_from_offline_hub_cache(spec_id, offline_hub):
    spec = tiny_variant(SPECS[spec_id])
    torch.manual_seed(1)
    reference = build_generator(spec)
    target = hub_cache_path(offline_hub, spec)
    torch.save(_real_layout_checkpoint(spec, reference), target)

    source = resolve_weights(spec)
    assert source.origin == "hub-cache" and source.path.samefile(target)
    # The real client resolves the same file from our cache layout (so the layout is not just ours).
    direct = hf_hub_download(spec.repo_id, spec.filename, repo_type=spec.repo_type, revision=spec.revision,
                             cache_dir=offline_hub, local_files_only=True)
    assert hashlib.sha256(open(direct, "rb").read()).digest() == hashlib.sha256(target.read_bytes()).digest()

    model = load_model(spec, allow_fallback=False).module
    assert not model.training
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("spec_id", ["style-monet", "edges2shoes", "realesrgan-x4"])
def test_offline_without_cache_falls_back_to_bundled(spec_id, offline_hub, tmp_path, monkeypatch):
    spec = SPECS[spec_id]
    fallback = SPECS[spec.fallback]
    with pytest.raises(WeightsUnavailableError, match="offline"):
        resolve_weights(spec)
    if not fallback.bundled.is_file():
        # Bundled weights are produced by the offline-defaults training; point at a stand-in file meanwhile.
        stand_in = tmp_path / "bundled.safetensors"
        save_model_folder(build_generator(fallback), tmp_path, spec_fields={})
        (tmp_path / "model.safetensors").rename(stand_in)
        monkeypatch.setitem(SPECS, fallback.id, dataclasses.replace(fallback, bundled=stand_in))
    loaded = load_model(spec)
    assert loaded.spec.id == fallback.id
    assert loaded.fell_back and spec.id in loaded.fallback_reason


def test_srgan_loads_from_its_second_source_when_only_that_is_cached(offline_hub):
    spec = tiny_variant(SPECS["srgan-x4"])
    first, second = spec.sources
    assert (first.repo_id, first.filename) == ("ChangyuLiu/SRGAN-PyTorch", "SRGAN_x4-ImageNet.pth.tar")
    assert (second.repo_id, second.filename) == ("goodfellowliu/SRGAN-PyTorch", "SRGAN_x4-SRGAN_ImageNet.pth.tar")
    torch.manual_seed(2)
    reference = build_generator(spec)
    target = hub_cache_path(offline_hub, second)
    torch.save(_srgan_training_checkpoint(reference.state_dict()), target)

    loaded = load_model(spec)
    assert not loaded.fell_back and loaded.spec is spec
    assert loaded.source.origin == "hub-cache" and loaded.source.path.samefile(target)
    for key, value in reference.state_dict().items():  # state_dict, not ema_state_dict
        assert torch.equal(loaded.module.state_dict()[key], value), key


def test_srgan_with_neither_source_falls_back_naming_both(offline_hub):
    spec = SPECS["srgan-x4"]
    loaded = load_model(spec)
    assert loaded.fell_back and loaded.spec.id == spec.fallback and loaded.requested is spec
    for hub in spec.sources:
        assert f"{hub.repo_id}/{hub.filename}" in loaded.fallback_reason
    with pytest.raises(WeightsUnavailableError, match="offline") as info:
        load_model(spec, allow_fallback=False)
    assert all(hub.repo_id in str(info.value) for hub in spec.sources)


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a closed loopback port: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="style-monet"):
        resolve_weights(SPECS["style-monet"])
    assert time.monotonic() - start < 30


def test_unknown_model_lists_choices():
    with pytest.raises(UnknownModelError) as info:
        get_spec("no-such-model")
    assert "default-upscale-x4" in str(info.value)


@pytest.mark.parametrize("spec_id", [k for k, s in SPECS.items() if s.is_bundled])
def test_bundled_weights_load_and_run(spec_id):
    spec = SPECS[spec_id]
    assert spec.bundled.is_file(), f"{spec.bundled} is missing: the bundled defaults ship in weights/"
    model = load_model(spec, allow_fallback=False).module
    side = max(spec.size_multiple, 32)
    with torch.inference_mode():
        y = model(torch.zeros(1, 3, side, side))
    assert y.shape[-1] == side * spec.scale and np.isfinite(y.numpy()).all()


def test_manifest_describes_every_bundled_file():
    manifest = json.loads((WEIGHTS_DIR / "MANIFEST.json").read_text())
    bundled = {spec_id: spec for spec_id, spec in SPECS.items() if spec.is_bundled}
    assert set(manifest["models"]) == set(bundled)
    total = 0
    for spec_id, entry in manifest["models"].items():
        path = WEIGHTS_DIR / entry["file"]
        assert path == bundled[spec_id].bundled
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["size_bytes"]
        assert entry["command"].startswith("python3 train.py ") and entry["steps"] > 0 and entry["wall_time_s"] > 0
        assert entry["data"]["licence"] and entry["device"]
        total += entry["size_bytes"]
    assert total < 60e6
    assert len(manifest["heldout"]) == 10

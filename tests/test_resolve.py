"""resolve: a custom checkpoint is read once from id to loaded network; a multi-generator file is split before
spandrel sees it; the one Hub fetch tells its failures apart by type."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_models import detect
from gan_models import resolve as resolve_module
from gan_models import weights as weights_module
from gan_models.archs import build_arch, spandrel_models
from gan_models.errors import HubRefusedError, HubUnreachableError, WeightsTooLargeError
from gan_models.refs import parse_model_ref
from gan_models.specs import HubFile, get_spec
from gan_models.weights import load_model
from tests.conftest import TINY_KWARGS


@pytest.fixture(autouse=True)
def _fresh_cache():
    resolve_module.clear_cache()
    yield
    resolve_module.clear_cache()


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """Every weights file read, by resolution or by the loader."""
    seen: list[Path] = []
    real = resolve_module.read_state_dict

    def counting(path):
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(resolve_module, "read_state_dict", counting)
    monkeypatch.setattr(weights_module, "read_state_dict", counting)
    return seen


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Every network the loader builds, and every spandrel run (detection or build)."""
    seen: list[str] = []
    real_build, real_spandrel = weights_module.build_generator, detect.describe_spandrel

    def build(spec):
        seen.append(spec.arch)
        return real_build(spec)

    def spandrel(state):
        seen.append("spandrel")
        return real_spandrel(state)

    monkeypatch.setattr(weights_module, "build_generator", build)
    monkeypatch.setattr(detect, "describe_spandrel", spandrel)
    monkeypatch.setattr(spandrel_models, "describe_spandrel", spandrel)  # the loader's builder
    return seen


def _training_file(path: Path) -> dict[str, torch.nn.Module]:
    """A CycleGAN training checkpoint (netG_A, netG_B, netD_A, netD_B as nested dicts, `epoch`), as one file."""
    torch.manual_seed(0)
    nets = {"netG_A": build_arch("resnet_generator", **TINY_KWARGS["resnet_generator"]),
            "netG_B": build_arch("resnet_generator", **TINY_KWARGS["resnet_generator"]),
            "netD_A": build_arch("patchgan", in_channels=3, ndf=4, n_layers=2),
            "netD_B": build_arch("patchgan", in_channels=3, ndf=4, n_layers=2)}
    torch.save({**{name: net.state_dict() for name, net in nets.items()}, "epoch": 200}, path)
    return nets


def test_get_spec_then_load_reads_the_file_once_and_never_runs_spandrel(tmp_path, reads, builds):
    path = tmp_path / "ckpt.pth"
    nets = _training_file(path)
    spec = get_spec(f"{path}#netG_B")
    loaded = load_model(spec, allow_fallback=False)
    assert reads == [path]
    assert builds == ["resnet_generator"]  # built once, by the loader; spandrel never saw the whole file
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(x), nets["netG_B"].eval()(x), atol=1e-6)
    load_model(spec, allow_fallback=False)  # a second load has nothing handed over: it reads
    assert reads == [path, path]


def test_spandrel_network_is_built_once_from_id_to_loaded_model(tmp_path, reads, builds):
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2).eval()
    path = tmp_path / "4x-span.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    spec = get_spec(str(path))
    loaded = load_model(spec, allow_fallback=False)
    assert spec.arch == "spandrel" and reads == [path] and builds == ["spandrel"]
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(x), net(x), atol=1e-5)
    load_model(spec, allow_fallback=False)  # nothing handed over now: read and built again
    assert reads == [path, path] and builds == ["spandrel", "spandrel"]


def test_resolve_returns_the_spec_and_the_state_dict_it_read(tmp_path, reads):
    path = tmp_path / "ckpt.pth"
    nets = _training_file(path)
    resolved = resolve_module.resolve(parse_model_ref(f"{path}#netG_A"), max_weights_mb=500)
    assert resolved.spec.key_prefix == "netG_A." and resolved.spec.arch == "resnet_generator"
    assert torch.equal(resolved.state_dict["netG_A"]["model.1.weight"], nets["netG_A"].state_dict()["model.1.weight"])
    load_model(resolved.spec, allow_fallback=False, state_dict=resolved.state_dict)
    assert reads == [path]


def test_handed_over_state_dict_is_not_used_for_a_changed_file(tmp_path, reads):
    path = tmp_path / "x.pth"
    torch.save(build_arch("srvgg_compact", **TINY_KWARGS["srvgg_compact"]).state_dict(), path)
    spec = get_spec(str(path))
    torch.save(build_arch("srvgg_compact", **TINY_KWARGS["srvgg_compact"]).state_dict(), path)  # new mtime
    assert resolve_module.take_state_dict(path) is None
    load_model(spec, allow_fallback=False)
    assert reads == [path, path]


# --- the one Hub fetch ---------------------------------------------------------------------------------------------


@pytest.fixture
def online_empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never contacted: _download is replaced


def _http_error(status: int):
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx.Response(status, request=httpx.Request("HEAD", "https://huggingface.co/x"))
    return HfHubHTTPError(f"{status} Client Error\nmore lines", response=response)


@pytest.mark.parametrize(("raised", "kind"), [
    (_http_error(404), HubRefusedError),
    (ConnectionError("connection refused\ntraceback"), HubUnreachableError),
    (TimeoutError("timed out"), HubUnreachableError),
])
def test_hub_failures_are_told_apart_by_type(online_empty_hub, monkeypatch, raised, kind):
    def download(hub, **_):
        raise raised

    monkeypatch.setattr(resolve_module, "_download", download)
    with pytest.raises(kind, match=r"^cannot get me/repo/x\.pth: [^\n]+$") as info:
        resolve_module.fetch_hub_file(HubFile(repo_id="me/repo", filename="x.pth"))
    assert info.value.__cause__ is raised


def test_offline_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match=r"offline mode \(HF_HUB_OFFLINE=1\)"):
        resolve_module.fetch_hub_file(HubFile(repo_id="me/repo", filename="x.pth"))


def test_cap_is_checked_before_the_download(online_empty_hub, monkeypatch):
    downloads = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: downloads.append(a))
    with pytest.raises(WeightsTooLargeError, match=r"over this server's limit of 1 MB \(GAN_STUDIO_MAX_WEIGHTS_MB\); "
                                                  r"nothing was downloaded"):
        resolve_module.fetch_hub_file(HubFile(repo_id="me/repo", filename="x.pth"), max_weights_mb=1,
                                      size=2 * 1024 * 1024)
    assert downloads == []

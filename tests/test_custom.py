"""Custom models: Hub ids and local files resolved, size-checked, detected, cached, loaded and run (offline).

Hub repos are written into a local HF cache in huggingface_hub's own layout; the size cap before download is
checked against a tiny fake Hub on 127.0.0.1 (HF_ENDPOINT), which records every request and stops itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from gan_models import custom
from gan_models import resolve as resolve_module
from gan_models.archs import STATE_BUILT_ARCHS
from gan_models.custom import custom_generators, parse_model_ref, resolve_custom
from gan_models.errors import (
    UnknownModelError,
    UnsupportedModelError,
    WeightsError,
    WeightsUnavailableError,
)
from gan_models.pipeline import translator_for
from gan_models.specs import get_spec
from gan_models.weights import load_model, read_state_dict, resolve_weights, unwrap_state_dict
from tests.conftest import FAKE_SHA, Evil, hub_cache_path, make_tiny_model, put, rgb_image, tiny_net

CAP = 500


@pytest.fixture(autouse=True)
def _fresh_cache():
    custom.clear_cache()
    yield
    custom.clear_cache()


def _same_output(a: torch.nn.Module, b: torch.nn.Module, side: int = 16) -> bool:
    x = torch.rand(1, 3, side, side)
    with torch.inference_mode():
        return torch.allclose(a(x), b(x), atol=1e-6)


# --- id syntax -------------------------------------------------------------------------------------------------------


def test_id_syntax_parses_repo_file_revision_network_and_options():
    ref = parse_model_ref("spaces/me/cyclegan/checkpoints/a_b/latest_net_G.pth@v1.0#G_B?range=0,1&tile=none")
    assert (ref.repo_type, ref.repo_id, ref.filename, ref.revision, ref.network) == (
        "space", "me/cyclegan", "checkpoints/a_b/latest_net_G.pth", "v1.0", "G_B")
    assert dict(ref.options) == {"range": "0,1", "tile": "none"}
    assert parse_model_ref("me/repo").filename is None and parse_model_ref("me/repo").repo_type == "model"
    assert parse_model_ref("models/me/repo/a.pth.tar").filename == "a.pth.tar"


@pytest.mark.parametrize(("bad", "message"), [
    ("nope", "unknown model 'nope'; choose one of: style-monet"),
    ("/no/such/file.pth", "no such local file or folder"),
    ("me/repo/readme.md", "not a weights file"),
    ("me/repo?colour=red", "unknown option 'colour=red'"),
])
def test_bad_ids_are_one_clear_line(bad, message):
    with pytest.raises(UnknownModelError, match=message) as info:
        get_spec(bad)
    assert "\n" not in str(info.value)


def test_visitor_text_never_reaches_local_files(tmp_path):
    torch.save(tiny_net("srvgg_compact").state_dict(), tmp_path / "x.pth")
    with pytest.raises(UnknownModelError, match=r"local files are not accepted here"):
        resolve_custom(str(tmp_path / "x.pth"), max_weights_mb=CAP, allow_local=False)
    with pytest.raises(UnknownModelError, match=r"'\.' and '\.\.' are not allowed"):
        parse_model_ref("me/repo/../../x.pth", allow_local=False)
    assert parse_model_ref("me/repo", allow_local=False).local is None


# --- Hub repos in the publishers' layouts (offline cache) ----------------------------------------------------------


def test_cyclegan_training_file_offers_generators_and_loads_the_chosen_one(offline_hub):
    g_a, g_b = tiny_net("resnet_generator", 1), tiny_net("resnet_generator", 2)
    d = tiny_net("patchgan", 3, in_channels=3, ndf=4, n_layers=2)
    state = {f"{name}.{k}": v for name, net in (("G_A", g_a), ("G_B", g_b), ("D_A", d), ("D_B", d))
             for k, v in net.state_dict().items()}
    torch.save(state, put(offline_hub, "tmabraham/horse2zebra_cyclegan", "pytorch_model.bin"))

    with pytest.raises(UnsupportedModelError, match=r"holds 2 generators \(G_A, G_B\); choose one with #NAME, e\.g\. "
                                                    r"'tmabraham/horse2zebra_cyclegan#G_B'"):
        get_spec("tmabraham/horse2zebra_cyclegan")
    offered = custom_generators("tmabraham/horse2zebra_cyclegan", max_weights_mb=CAP)
    assert [s.id for s in offered] == ["tmabraham/horse2zebra_cyclegan#G_A", "tmabraham/horse2zebra_cyclegan#G_B"]

    spec = get_spec("tmabraham/horse2zebra_cyclegan#G_B")
    assert spec == offered[1] and spec.key_prefix == "G_B."
    assert (spec.task, spec.arch, spec.value_range, spec.tile) == ("style", "resnet_generator", (-1.0, 1.0), None)
    assert (spec.repo_id, spec.filename, spec.revision, spec.bundled) == (
        "tmabraham/horse2zebra_cyclegan", "pytorch_model.bin", FAKE_SHA, None)
    assert _same_output(load_model(spec, allow_fallback=False).module, g_b)
    with pytest.raises(UnsupportedModelError, match="no generator 'G_C' in the file; it offers G_A, G_B"):
        get_spec("tmabraham/horse2zebra_cyclegan#G_C")


def test_junyanz_file_in_a_space_runs_through_translator_for(offline_hub):
    net = tiny_net("resnet_generator")
    state = dict(net.state_dict())
    state["model.2.running_mean"] = torch.zeros(8)  # old InstanceNorm statistics, as in the official files
    torch.save(state, put(offline_hub, "me/cyclegan", "checkpoints/style_x/latest_net_G.pth", repo_type="space"))
    translator = translator_for("spaces/me/cyclegan/checkpoints/style_x/latest_net_G.pth", backend="torch")
    assert translator.spec.repo_type == "space" and translator.spec.size_multiple == 4
    assert translator(rgb_image(30, 22)).size == (30, 22)


def test_repo_pushed_by_train_py_loads_by_repo_id(offline_hub, tmp_path):
    local = make_tiny_model(tmp_path / "pushed", "upscale", seed=4)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tmp_path / "pushed" / name, put(offline_hub, "me/tiny-x4", name))
    spec = get_spec("me/tiny-x4")
    assert spec.id == "me/tiny-x4" and spec.bundled is None and spec.fallback is None
    assert (spec.repo_id, spec.filename, spec.revision) == ("me/tiny-x4", "model.safetensors", FAKE_SHA)
    assert (spec.arch, dict(spec.arch_kwargs), spec.scale, spec.tile) == (
        local.arch, dict(local.arch_kwargs), 4, local.tile)
    assert resolve_weights(spec).origin == "hub-cache"
    assert _same_output(load_model(spec, allow_fallback=False).module, load_model(local, allow_fallback=False).module)


def test_repo_with_one_weights_file_and_safetensors_preferred(offline_hub):
    net = tiny_net("srvgg_compact")
    torch.save({"params": net.state_dict()}, put(offline_hub, "me/one", "realesr-general-x4v3.pth"))
    put(offline_hub, "me/one", "README.md").write_text("# card")
    assert get_spec("me/one").filename == "realesr-general-x4v3.pth"

    torch.save(net.state_dict(), put(offline_hub, "me/both", "pytorch_model.bin"))
    save_file(net.state_dict(), put(offline_hub, "me/both", "model.safetensors"))
    assert get_spec("me/both").filename == "model.safetensors"

    torch.save(net.state_dict(), put(offline_hub, "me/two", "a.pth"))
    torch.save(net.state_dict(), put(offline_hub, "me/two", "b.pth"))
    with pytest.raises(UnsupportedModelError, match=r"me/two: holds 2 weights files \(a\.pth, b\.pth\); name one, "
                                                    r"e\.g\. 'me/two/a\.pth'"):
        get_spec("me/two")


def test_revision_picks_that_snapshot(offline_hub):
    old_sha = "f" * 40
    v1 = hub_cache_path(offline_hub, SimpleNamespace(repo_type="model", repo_id="me/rev", revision=old_sha,
                                                     filename="net.pth"))
    (offline_hub / "models--me--rev" / "refs").mkdir(parents=True, exist_ok=True)
    (offline_hub / "models--me--rev" / "refs" / "v1").write_text(old_sha)
    torch.save(tiny_net("srvgg_compact", 1).state_dict(), v1)
    torch.save(tiny_net("srvgg_compact", 2, num_feat=4, num_conv=1, upscale=2, act_type="prelu").state_dict(),
               put(offline_hub, "me/rev", "net.pth"))
    assert get_spec("me/rev/net.pth").scale == 2
    pinned = get_spec("me/rev/net.pth@v1")
    assert pinned.scale == 4 and pinned.revision == old_sha


def test_unsupported_hub_file_is_one_line(offline_hub):
    torch.save({f"bert.layer.{i}.weight": torch.zeros(2, 2) for i in range(12)}, put(offline_hub, "me/bert", "x.bin"))
    with pytest.raises(UnsupportedModelError) as info:
        get_spec("me/bert")
    message = str(info.value)
    assert message.startswith("me/bert/x.bin: 12 tensors, first keys bert.layer.0.weight")
    assert message.endswith("not a CycleGAN/Pix2Pix/SR generator we know (supported layouts: docs/custom-models.md)")
    assert "\n" not in message and str(offline_hub) not in message


def test_uncached_repo_offline_says_so(offline_hub):
    with pytest.raises(WeightsUnavailableError, match=r"me/absent: cannot list the repo \(offline mode"):
        get_spec("me/absent")


# --- local files, options, switches, caching ----------------------------------------------------------------------


def test_local_file_and_folder_with_value_range_override(tmp_path):
    net = tiny_net("resnet_generator")
    path = tmp_path / "mine" / "latest_net_G_A.pth"
    path.parent.mkdir()
    torch.save(net.state_dict(), path)
    spec = get_spec(str(path))
    assert (spec.bundled, spec.repo_id, spec.value_range) == (path.resolve(), None, (-1.0, 1.0))
    assert _same_output(load_model(spec, allow_fallback=False).module, net)
    assert get_spec(str(tmp_path / "mine")).bundled == path.resolve()  # a folder holding one weights file

    trained_on_01 = get_spec(f"{path}?range=0,1&tile=64")
    assert trained_on_01.value_range == (0.0, 1.0) and trained_on_01.tile == 64
    with pytest.raises(UnknownModelError, match="bad option value"):
        get_spec(f"{path}?range=1,0")


def test_local_file_runs_through_the_cli(tmp_path, capsys):
    from gan_models.cli import main

    torch.save({"params_ema": tiny_net("rrdbnet").state_dict()}, tmp_path / "RealESRGAN_x4plus.pth")
    rgb_image(12, 10).save(tmp_path / "in.png")
    assert main(["run", str(tmp_path / "RealESRGAN_x4plus.pth"), str(tmp_path / "in.png"), "-o",
                 str(tmp_path / "out"), "--backend", "torch"]) == 0
    written = list((tmp_path / "out").glob("*.png"))
    assert len(written) == 1 and written[0].parent == tmp_path / "out"
    from PIL import Image

    assert Image.open(written[0]).size == (48, 40)


def test_custom_models_switched_off_names_the_variable(tmp_path):
    torch.save(tiny_net("srvgg_compact").state_dict(), tmp_path / "x.pth")
    with pytest.raises(UnsupportedModelError, match="custom models are switched off.*GAN_STUDIO_CUSTOM_MODELS=0"):
        get_spec(str(tmp_path / "x.pth"), custom_models=False)
    with pytest.raises(UnsupportedModelError, match="GAN_STUDIO_CUSTOM_MODELS=0"):
        resolve_custom("me/repo", max_weights_mb=CAP, enabled=False)  # refused before any Hub request
    assert get_spec("default-upscale-x4", custom_models=False).id == "default-upscale-x4"


def test_same_id_is_resolved_once_and_a_changed_file_again(tmp_path, monkeypatch):
    reads = []

    def counting_read(path):
        reads.append(Path(path))
        return read_state_dict(path)

    monkeypatch.setattr(resolve_module, "read_state_dict", counting_read)
    path = tmp_path / "x.pth"
    torch.save(tiny_net("srvgg_compact").state_dict(), path)
    first = get_spec(str(path))
    assert get_spec(str(path)) == first and custom_generators(str(path), max_weights_mb=CAP) == [first]
    assert len(reads) == 1
    torch.save(tiny_net("srvgg_compact", num_feat=4, num_conv=1, upscale=2, act_type="prelu").state_dict(), path)
    assert get_spec(str(path)).scale == 2 and len(reads) == 2


def test_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve_module, "CACHE_SIZE", 2)
    for i in range(4):
        torch.save(tiny_net("srvgg_compact").state_dict(), tmp_path / f"{i}.pth")
        get_spec(str(tmp_path / f"{i}.pth"))
    assert len(resolve_module._cache) == 2


def test_local_file_over_the_cap_is_refused(tmp_path):
    torch.save(tiny_net("srvgg_compact").state_dict(), tmp_path / "x.pth")
    with pytest.raises(UnsupportedModelError, match=r"over this server's limit of 0 MB \(GAN_STUDIO_MAX_WEIGHTS_MB\)"):
        get_spec(str(tmp_path / "x.pth"), max_weights_mb=0)


def test_pickle_with_code_is_refused(tmp_path, capsys):
    torch.save({"model.1.weight": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="refused: the file holds pickled objects other than tensors"):
        get_spec(str(tmp_path / "evil.pth"))
    assert "pwned" not in capsys.readouterr().out


def test_spandrel_file_resolves_loads_and_runs(tmp_path):
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4)
    save_file(net.state_dict(), tmp_path / "span.safetensors")
    spec = get_spec(str(tmp_path / "span.safetensors"))
    assert (spec.arch, spec.task, spec.scale, spec.value_range) == ("spandrel", "upscale", 4, (0.0, 1.0))
    assert "SPAN" in spec.description
    # What the loader does for STATE_BUILT_ARCHS networks: read, unwrap, build from the state dict.
    model = STATE_BUILT_ARCHS[spec.arch](unwrap_state_dict(read_state_dict(resolve_weights(spec).path)))
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 8, 12)).shape == (1, 3, 32, 48)


# --- size cap before download, against a fake Hub ------------------------------------------------------------------


class _FakeHub:
    """Serves one repo's files (HEAD/GET resolve and the repo-info API) and records every request."""

    def __init__(self, files: dict[str, bytes], *, claimed_sizes: dict[str, int] | None = None) -> None:
        self.files, self.claimed = files, claimed_sizes or {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _resolve(self, send_body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].split("/resolve/")
                name = parts[1].split("/", 1)[1] if len(parts) == 2 else ""
                if self.path.startswith("/api/"):
                    body = json.dumps({"id": "me/big", "sha": FAKE_SHA, "siblings": [
                        {"rfilename": n, "size": hub.claimed.get(n, len(d))} for n, d in hub.files.items()]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                elif name in hub.files:
                    body = hub.files[name]
                    self.send_response(200)
                    self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                    self.send_header("X-Repo-Commit", FAKE_SHA)
                    self.send_header("X-Linked-Size", str(hub.claimed.get(name, len(body))))
                else:
                    body = b"{}"
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._resolve(False)

            def do_GET(self) -> None:  # noqa: N802
                self._resolve(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.stopper = threading.Timer(60, self.server.shutdown)  # never outlives a hung test
        self.stopper.start()

    def close(self) -> None:
        self.stopper.cancel()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hubs: list[_FakeHub] = []

    def start(files: dict[str, bytes], **kwargs) -> _FakeHub:
        hub = _FakeHub(files, **kwargs)
        hubs.append(hub)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        return hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: the test run sets it, this fake Hub is the exception.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    yield start
    for hub in hubs:
        hub.close()


def _safetensors_bytes(tmp_path: Path) -> bytes:
    save_file(tiny_net("srvgg_compact").state_dict(), tmp_path / "w.safetensors")
    return (tmp_path / "w.safetensors").read_bytes()


def test_file_over_the_cap_is_refused_before_download(fake_hub, tmp_path):
    hub = fake_hub({"big.safetensors": _safetensors_bytes(tmp_path)}, claimed_sizes={"big.safetensors": 900 << 20})
    with pytest.raises(UnsupportedModelError, match=r"me/big/big\.safetensors: 900 MB is over this server's limit "
                                                    r"of 500 MB \(GAN_STUDIO_MAX_WEIGHTS_MB\); nothing was downloaded"):
        get_spec("me/big/big.safetensors")
    assert hub.requests and all(method == "HEAD" for method, _ in hub.requests)


def test_repo_over_the_cap_is_refused_from_its_listing(fake_hub, tmp_path):
    hub = fake_hub({"big.safetensors": _safetensors_bytes(tmp_path)}, claimed_sizes={"big.safetensors": 900 << 20})
    with pytest.raises(UnsupportedModelError, match="900 MB is over this server's limit of 500 MB"):
        get_spec("me/big")
    assert [m for m, p in hub.requests] == ["GET"] and hub.requests[0][1].startswith("/api/models/me/big")


def test_file_under_the_cap_downloads_once(fake_hub, tmp_path):
    hub = fake_hub({"w.safetensors": _safetensors_bytes(tmp_path)})
    spec = get_spec("me/small/w.safetensors")
    assert spec.arch == "srvgg_compact" and spec.revision == FAKE_SHA
    downloads = [p for m, p in hub.requests if m == "GET"]
    assert len(downloads) == 1
    assert get_spec("me/small/w.safetensors") == spec and [p for m, p in hub.requests if m == "GET"] == downloads
    assert resolve_weights(spec).origin == "hub-cache"  # the loader finds the file without the network


def test_app_weights_flag_accepts_a_hub_id(offline_hub):
    from app import app_specs

    torch.save({"params_ema": tiny_net("rrdbnet").state_dict()}, put(offline_hub, "me/esrgan", "RealESRGAN_x4plus.pth"))
    specs = app_specs(["me/esrgan"])
    assert specs["me/esrgan"].task == "upscale" and specs["me/esrgan"].arch == "rrdbnet"


def test_nested_training_dict_generator_loads(tmp_path):
    g_a, g_b = tiny_net("resnet_generator", 1), tiny_net("resnet_generator", 2)
    torch.save({"netG_A": g_a.state_dict(), "netG_B": g_b.state_dict(), "epoch": 200}, tmp_path / "ckpt.pth")
    spec = get_spec(f"{tmp_path / 'ckpt.pth'}#netG_B")
    assert spec.key_prefix == "netG_B."
    assert _same_output(load_model(spec, allow_fallback=False).module, g_b)

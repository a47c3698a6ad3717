"""Faults of issue #7 at the library level: unusable weights files are refused with the file and the reason, and an
unreachable Hub gives the bundled fallback without a long hang.

The app side (a broken model marked unavailable, the others still served) is in tests/test_app.py; a refused
connection and offline mode are in tests/test_specs_conformance.py; concurrency is in test_pipeline/test_export.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from gan_models import SPECS, ModelSpec, load_model, spec_from_config
from gan_models import resolve as resolve_module
from gan_models import weights as weights_module
from gan_models.archs import build_arch
from gan_models.errors import WeightsError, WeightsUnavailableError
from gan_models.weights import (
    build_generator,
    load_state_dict_strict,
    read_state_dict,
    resolve_weights,
    save_model_folder,
)

from .conftest import TINY_KWARGS, hub_cache_path, make_tiny_model, tiny_variant


@pytest.fixture
def tiny_up(tmp_path) -> ModelSpec:
    """A good tiny upscaler (train.py folder layout); its weights file is spec.bundled."""
    return make_tiny_model(tmp_path / "good", "upscale")


def _pointing_at(spec: ModelSpec, path: Path) -> ModelSpec:
    return dataclasses.replace(spec, id=f"{spec.id}-{path.stem}", bundled=path)


def _assert_refused(spec: ModelSpec, match: str) -> WeightsError:
    """load_model(spec) raises WeightsError naming the file; the file itself is left as it was."""
    before = spec.bundled.read_bytes()
    with pytest.raises(WeightsError, match=match) as info:
        load_model(spec, allow_fallback=False)
    assert str(spec.bundled) in str(info.value)
    assert spec.bundled.read_bytes() == before
    return info.value


def _assert_still_works(spec: ModelSpec) -> None:
    """After a refused file, other models still load and run (no state poisoned by the failure)."""
    model = load_model(spec, allow_fallback=False).module
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def _torch_bytes(obj, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


# --- Corrupt, truncated, empty files ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random-bytes", "truncated-half", "truncated-in-header"])
def test_corrupt_safetensors_is_refused_with_the_file_and_reason(tiny_up, tmp_path, damage):
    good = tiny_up.bundled.read_bytes()
    data = {
        "random-bytes": random.Random(0).randbytes(len(good)),
        "truncated-half": good[: len(good) // 2],
        "truncated-in-header": good[:20],
    }[damage]
    bad = tmp_path / f"{damage}.safetensors"
    bad.write_bytes(data)
    _assert_refused(_pointing_at(tiny_up, bad), match="not a valid safetensors file")
    _assert_still_works(tiny_up)


def test_safetensors_truncated_under_another_suffix_is_recognised(tiny_up, tmp_path):
    # Sniffed by its header, so the message gives the safetensors reason rather than a pickle error.
    good = tiny_up.bundled.read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(good[: len(good) // 2])
    _assert_refused(_pointing_at(tiny_up, bad), match="not a valid safetensors file")


@pytest.mark.parametrize(
    "layout",
    ["zip", "legacy"],
)
def test_truncated_torch_checkpoint_is_refused_as_truncated(tiny_up, tmp_path, layout):
    state = build_generator(tiny_up).state_dict()
    data = _torch_bytes(state, _use_new_zipfile_serialization=layout == "zip")
    bad = tmp_path / f"{layout}.pth"
    bad.write_bytes(data[: len(data) // 2])
    _assert_refused(_pointing_at(tiny_up, bad), match="corrupt or truncated")


def test_checkpoint_that_is_not_a_dict_is_refused(tiny_up, tmp_path):
    bad = tmp_path / "bare-tensor.pth"
    bad.write_bytes(_torch_bytes(torch.ones(3)))
    _assert_refused(_pointing_at(tiny_up, bad), match="expected a dict of tensors, found Tensor")


def test_garbage_pth_is_called_corrupt_not_malicious(tiny_up, tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(random.Random(1).randbytes(4096))
    with pytest.raises(WeightsError) as info:
        load_model(_pointing_at(tiny_up, bad), allow_fallback=False)
    message = str(info.value)
    assert str(bad) in message
    assert "code execution" not in message and "pickled objects" not in message, message
    assert "not a weights file (neither safetensors nor a PyTorch checkpoint)" in message, message


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_empty_file_is_refused(tiny_up, tmp_path, suffix):
    bad = tmp_path / f"empty{suffix}"
    bad.touch()
    _assert_refused(_pointing_at(tiny_up, bad), match=r"empty \(0 bytes\)")


def test_missing_local_file_is_unavailable_not_a_crash(tiny_up, tmp_path):
    gone = tmp_path / "gone.safetensors"
    with pytest.raises(WeightsUnavailableError, match="missing") as info:
        load_model(_pointing_at(tiny_up, gone), allow_fallback=False)
    assert str(gone) in str(info.value)


def test_corrupt_file_in_the_hub_cache_is_refused_not_replaced(offline_hub, tmp_path):
    # A half-downloaded Hub file: refused by name (the app marks the model unavailable), not silently swapped for
    # the bundled fallback, which only stands in when the Hub cannot be reached.
    spec = tiny_variant(SPECS["realesrgan-x4"])
    target = hub_cache_path(offline_hub, spec)
    data = _torch_bytes(build_generator(spec).state_dict())
    target.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError) as info:
        load_model(spec)
    assert str(info.value).startswith(f"{target}: ")
    assert not isinstance(info.value, WeightsUnavailableError)


# --- Pickles that try to run code ---------------------------------------------------------------------------------


class _Trap:
    """Unpickling this calls open(marker, "w"): the marker file appears iff pickled code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _trap_file(kind: str, path: Path, marker: Path, state: dict[str, torch.Tensor]) -> Path:
    if kind == "torch-zip":  # a plausible state dict with one poisoned entry
        path.write_bytes(_torch_bytes({**state, "extra": _Trap(marker)}))
    elif kind == "training-checkpoint":  # real tensors under state_dict, the trap in a side field
        path.write_bytes(_torch_bytes({"state_dict": state, "optimizer": _Trap(marker), "epoch": 3}))
    else:  # a raw pickle stream, as old .pth/.ckpt files are
        path.write_bytes(pickle.dumps({"params": _Trap(marker)}, protocol=2))
    return path


@pytest.mark.parametrize("kind", ["torch-zip", "training-checkpoint", "raw-pickle"])
def test_pickle_that_runs_code_is_refused_and_never_run(tiny_up, tmp_path, kind):
    state = build_generator(tiny_up).state_dict()

    # Control: the same payload does run code when unpickled without restrictions (so the test is not vacuous).
    control = tmp_path / "control-marker"
    live = _trap_file(kind, tmp_path / f"control-{kind}.pth", control, state)
    try:
        torch.load(live, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - the raw pickle fails torch's magic-number check after it has run
        pass
    assert control.exists()

    marker = tmp_path / "marker"
    bad = _trap_file(kind, tmp_path / f"{kind}.pth", marker, state)
    error = _assert_refused(_pointing_at(tiny_up, bad), match="refused")
    assert "pickled objects" in str(error)
    assert not marker.exists(), "unpickling ran the file's code"


def test_plain_tensor_pth_loads(tiny_up, tmp_path):
    torch.manual_seed(3)
    reference = build_generator(tiny_up)
    good = tmp_path / "plain.pth"
    good.write_bytes(_torch_bytes({f"module.{k}": v for k, v in reference.state_dict().items()}))
    model = load_model(_pointing_at(tiny_up, good), allow_fallback=False).module
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


# --- State dicts of another architecture or width -----------------------------------------------------------------


@pytest.mark.parametrize(
    "foreign, labels",
    [
        ("resnet_generator", ("missing: ", "unexpected: ")),  # a CycleGAN generator in an upscaler folder
        ("wider-srvgg", ("wrong shape: ",)),  # same architecture, num_feat 16 instead of 8
        ("shallower-srvgg", ("missing: ",)),  # same architecture, fewer conv layers
    ],
)
def test_wrong_architecture_is_refused_with_the_keys(tmp_path, foreign, labels):
    spec = make_tiny_model(tmp_path / "model", "upscale")
    kwargs = {
        "resnet_generator": ("resnet_generator", TINY_KWARGS["resnet_generator"]),
        "wider-srvgg": ("srvgg_compact", {**TINY_KWARGS["srvgg_compact"], "num_feat": 16}),
        "shallower-srvgg": ("srvgg_compact", {**TINY_KWARGS["srvgg_compact"], "num_conv": 1}),
    }[foreign]
    save_model_folder(build_arch(kwargs[0], **kwargs[1]), tmp_path / "foreign", spec_fields={})
    (tmp_path / "foreign" / "model.safetensors").replace(spec.bundled)

    spec = spec_from_config(tmp_path / "model")  # the public path for a train.py folder
    with pytest.raises(WeightsError, match="does not match SRVGGNetCompact") as info:
        load_model(spec, allow_fallback=False)
    message = str(info.value)
    assert spec.id in message and str(spec.bundled) in message
    for label in labels:
        assert label in message, message
    # The same fault must not be blamed on the Hub: no fallback stands in for a local file of the wrong shape.
    with pytest.raises(WeightsError):
        load_model(spec)


def test_mismatch_leaves_the_network_untouched(tiny_up):
    model = build_generator(tiny_up)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    other = dict(build_generator(tiny_up).state_dict())  # matching keys, different values...
    bad_key = sorted(other)[-1]
    other[bad_key] = torch.zeros(other[bad_key].shape[0] + 1, *other[bad_key].shape[1:])  # ...but one bad shape

    # torch's own strict load copies every matching tensor before it complains: a half-loaded network.
    half = build_generator(tiny_up)
    half.load_state_dict(before)
    with pytest.raises(RuntimeError):
        half.load_state_dict(other, strict=True)
    assert any(not torch.equal(half.state_dict()[k], before[k]) for k in before)

    with pytest.raises(WeightsError, match="wrong shape") as info:
        load_state_dict_strict(model, other, source="checkpoint.pth")
    assert "checkpoint.pth" in str(info.value) and bad_key in str(info.value)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} was changed by a refused load"


# --- Hub unreachable: DNS failure, a server that never answers ----------------------------------------------------


@pytest.fixture
def hub_at(tmp_path, monkeypatch) -> Callable[[str], None]:
    """Point the Hub client at an endpoint, online, with an empty cache under tmp_path."""

    def point(endpoint: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY",
                     "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        # Read by huggingface_hub at import time: a suite started with HF_HUB_OFFLINE=1 must still go online here.
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    return point


class HubCallStillBlocked(AssertionError):
    """The Hub call had not returned when its deadline passed."""


@dataclasses.dataclass
class _Outcome:
    value: object = None
    error: BaseException | None = None
    elapsed: float = 0.0


def _call_with_deadline(fn: Callable[[], object], deadline_s: float) -> _Outcome:
    """Run fn in a daemon thread; raise HubCallStillBlocked if it has not returned after deadline_s (never hangs)."""
    outcome = _Outcome()

    def target() -> None:
        try:
            outcome.value = fn()
        except BaseException as exc:  # noqa: B036 - handed back to the test
            outcome.error = exc

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True, name="hub-call")
    thread.start()
    thread.join(deadline_s)
    outcome.elapsed = time.monotonic() - start
    if thread.is_alive():
        raise HubCallStillBlocked(f"still blocked after {deadline_s:.0f} s")
    return outcome


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def test_dns_failure_falls_back_to_bundled_promptly(hub_at, tmp_path, monkeypatch):
    hub_at("http://nonexistent-host.invalid")  # .invalid never resolves (RFC 6761)
    spec = SPECS["style-monet"]
    fallback = tiny_variant(SPECS[spec.fallback])
    save_model_folder(build_generator(fallback), tmp_path / "bundled", spec_fields={})
    monkeypatch.setitem(SPECS, fallback.id, dataclasses.replace(fallback, bundled=tmp_path / "bundled" /
                                                                "model.safetensors"))

    # One Hub attempt serves both checks (each costs the client's retry back-off): record what resolve_weights
    # raised inside load_model.
    raised: list[BaseException] = []
    real_resolve = weights_module.resolve_weights

    def recording_resolve(s: ModelSpec):
        try:
            return real_resolve(s)
        except BaseException as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(weights_module, "resolve_weights", recording_resolve)
    outcome = _call_with_deadline(lambda: load_model(spec), 30)

    assert outcome.error is None, repr(outcome.error)
    assert outcome.elapsed < 30
    [error] = raised
    assert isinstance(error, WeightsUnavailableError) and str(error).startswith(f"{spec.id}: ")
    assert spec.repo_id in str(error) and "offline mode" not in str(error)
    # The failure really was the name lookup (not offline mode or a proxy answering for the host).
    assert any(isinstance(e, socket.gaierror) or type(e).__name__ == "ConnectError" for e in _chain(error)), [
        type(e).__name__ for e in _chain(error)
    ]

    loaded = outcome.value
    assert loaded.spec.id == fallback.id and loaded.source.spec_id == fallback.id
    assert loaded.fell_back and spec.id in loaded.fallback_reason and fallback.id in loaded.fallback_reason
    assert not loaded.module.training


class _SilentServer:
    """A loopback TCP server that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-server")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def __enter__(self) -> _SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        # Closing makes a still-waiting client see a reset/refusal, so an abandoned call winds down by itself.
        self._stop.set()
        self._thread.join()
        for conn in self.connections:
            conn.close()
        self._sock.close()


def test_hub_that_never_answers_fails_within_the_timeout(hub_at, monkeypatch):
    monkeypatch.setattr(resolve_module, "HUB_TIMEOUT_S", 1.0)  # the bound scales with it; keeps the test short
    deadline = 3 * resolve_module.HUB_TIMEOUT_S + 10
    with _SilentServer() as server:
        hub_at(server.url)
        try:
            outcome = _call_with_deadline(lambda: resolve_weights(SPECS["style-monet"]), deadline)
        finally:
            assert server.connections, "the request never reached the silent server"
    assert isinstance(outcome.error, WeightsUnavailableError), repr(outcome.error)
    assert str(outcome.error).startswith("style-monet: ")
    assert outcome.elapsed < deadline


class _Shell:
    def __reduce__(self):
        return (os.system, ("exit 3",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_calling_os_system_is_refused(tmp_path, protocol):
    bad = tmp_path / f"shell{protocol}.pth"
    bad.write_bytes(pickle.dumps({"weight": _Shell()}, protocol=protocol))
    with pytest.raises(WeightsError, match="refused") as info:
        read_state_dict(bad)
    assert str(info.value).startswith(f"{bad}: ")
    if protocol == 2:  # the safe unpickler names the callable it blocked
        assert "system; possible code execution" in str(info.value)


# --- Several Hub sources ------------------------------------------------------------------------------------------


def _http_error(status: int, message: str) -> Exception:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx.Response(status, request=httpx.Request("HEAD", "https://huggingface.co/x"))
    return HfHubHTTPError(message, response=response)


def test_second_source_is_downloaded_when_the_hub_has_not_the_first(hub_at, tmp_path, monkeypatch):
    hub_at("http://127.0.0.1:9")  # never contacted: _download is replaced below
    spec = SPECS["srgan-x4"]
    first, second = spec.sources
    tried: list[str] = []

    def download(hub, **_):
        tried.append(hub.repo_id)
        if hub == first:
            raise _http_error(404, "404 Client Error: Entry Not Found for url: https://huggingface.co/x\nmore")
        return tmp_path / "weights.pth"

    monkeypatch.setattr(resolve_module, "_download", download)
    source = resolve_weights(spec)
    assert tried == [first.repo_id, second.repo_id]
    assert (source.origin, source.hub, source.path) == ("hub", second, tmp_path / "weights.pth")


def test_sources_after_a_network_failure_are_not_tried(hub_at, monkeypatch):
    hub_at("http://127.0.0.1:9")
    spec = SPECS["srgan-x4"]
    first, second = spec.sources
    tried: list[str] = []

    def download(hub, **_):
        tried.append(hub.repo_id)
        raise ConnectionError("connection refused\ntraceback lines")

    monkeypatch.setattr(resolve_module, "_download", download)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights(spec)
    assert tried == [first.repo_id]  # the other source lives on the same unanswering Hub
    message = str(info.value)
    assert message.startswith("srgan-x4: cannot get ") and "traceback" not in message
    assert f"{first.repo_id}/{first.filename}@main: ConnectionError: connection refused" in message
    assert f"{second.repo_id}/{second.filename}@main: not tried" in message


def test_failed_fallback_is_reported_with_the_hub_failure(offline_hub, monkeypatch, tmp_path):
    spec = SPECS["style-monet"]
    missing = tmp_path / "gone.safetensors"
    monkeypatch.setitem(SPECS, spec.fallback, dataclasses.replace(SPECS[spec.fallback], bundled=missing))
    with pytest.raises(WeightsUnavailableError) as info:
        load_model(spec)
    message = str(info.value)
    assert message.startswith("style-monet: cannot get ") and "offline mode" in message
    assert f"its fallback {spec.fallback} failed too" in message and str(missing) in message

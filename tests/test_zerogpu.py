"""ZeroGPU: the real `spaces` package's start-up and GPU calls against a fake device API on loopback (a subprocess:
the package patches torch process-wide), and the glue's parts with a stub package.

The fake API answers the four endpoints `spaces` 0.51.3 calls (`spaces/zero/api.py`): POST /startup-report at
launch, POST /schedule per call (a JSON ScheduleResponse: no queue), POST /allow from the forked worker, POST
/release at the end of the call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from gan_models import SPECS, zerogpu

from .conftest import REPO, app_settings, free_port, rgb_image, stub_spaces

BOOT_TIMEOUT_S = 300


class FakeDeviceAPI(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, list[str]]]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        self.calls.append((url.path, parse_qs(url.query)))
        if url.path == "/schedule":
            # idle: the GPU stayed with this Space since the last call, so its worker (and memory) is reused
            idle = any(path == "/release" for path, _ in self.calls)
            body = json.dumps({"idle": idle, "nvidiaIndex": 0, "nvidiaUUID": "GPU-emulated",
                               "allowToken": f"token-{len(self.calls)}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200 if url.path in ("/startup-report", "/allow", "/release") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def device_api() -> Iterator[tuple[str, list]]:
    calls: list = []
    handler = type("Handler", (FakeDeviceAPI,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 1
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _space_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "cgroup").write_text("0::/emulated-space\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU_", "GAN_STUDIO_", "HF_"))}
    env.pop("SYSTEM", None)
    return {**env, "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
            "ZEROGPU_PROC_SELF_CGROUP_PATH": str(tmp_path / "cgroup"), "ZEROGPU_OFFLOAD_DIR": str(tmp_path / "off"),
            "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(free_port()),
            "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO), **extra}


@pytest.mark.slow  # 13-50 s (a whole app boot in a subprocess): CI's slow step runs it
@pytest.mark.zerogpu  # ~20-50 s (a whole app boot in a subprocess); essential: the acceptance check
def test_emulated_zerogpu_boot_is_clean_and_gpu_calls_report_back(tmp_path, device_api):
    pytest.importorskip("spaces", reason="CI installs it (requirements-dev.txt)")
    url, calls = device_api
    image, big = tmp_path / "photo.png", tmp_path / "big.png"
    rgb_image(40, 28).save(image)
    Image.new("RGB", (2100, 2000), "white").save(big)  # 4.2 MP: over the 4 MP upscale limit
    proc = subprocess.run([sys.executable, "-m", "tests.emulate_zerogpu", str(image), str(big)], cwd=REPO,
                          env=_space_env(tmp_path, SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=url),
                          capture_output=True, text=True, timeout=BOOT_TIMEOUT_S)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # the boot log: no CUDA reached outside a GPU call, no thread died, nothing unexpected
    assert "Low-level CUDA init" not in log and "Exception in thread" not in log and "Traceback" not in log, log
    assert "warming" not in log  # every default model loaded (on the CPU) at start-up
    result = json.loads(log.split("RESULT ", 1)[1].splitlines()[0])
    paths = [path for path, _ in calls]
    assert paths[0] == "/startup-report"  # at launch, as the package does once a @spaces.GPU function exists
    # two successful GPU calls and the one that failed inside the worker; the custom model that could not be
    # had failed in the main process, before any GPU was reserved
    assert paths.count("/schedule") == paths.count("/release") == 3
    assert paths.count("/allow") == 1  # one worker, forked for the first call and reused by the next two
    # an error the handler reports to the client is a result, not a crashed task: the worker (and its model on the
    # GPU) is kept
    assert [query["fail"] for path, query in calls if path == "/release"] == [["false"]] * 3
    info = result["ok"]["value"]["info"]
    assert "on cpu" in info and Image.open(result["ok"]["value"]["file"]).size == (80, 56)
    first, second = ({row["id"]: row["status"] for row in result[key]} for key in ("first", "second"))
    assert first["default-upscale-x4"].startswith("loaded · last GPU call: ")
    assert "weights moved in" in first["default-upscale-x4"]  # the worker's first use of the model
    assert "weights moved" not in second["default-upscale-x4"]  # kept on the device by the reused worker
    assert result["custom"]["error"].startswith("Model someone/not-cached/model.pth is unavailable")
    rows = {row["id"]: row for row in result["models"]}
    assert "someone/not-cached/model.pth" in rows and not rows["someone/not-cached/model.pth"]["available"]
    # what the worker learned is in the main process: the last call of the model failed, in the worker
    status = rows["default-upscale-x4"]["status"]
    assert status.startswith("loaded · last GPU call failed (") and "on cpu" in status, status
    # the error the client got is the CPU path's, word for word
    assert result["too_large"]["error"] == _cpu_error(tmp_path, big)
    assert status.endswith(result["too_large"]["error"])
    assert "**ZeroGPU:** on" in result["runtime"] and "(3 GPU calls so far)" in result["runtime"]


def _cpu_error(tmp_path: Path, big: Path) -> str:
    import gradio as gr

    from app import Studio

    studio = Studio(specs=SPECS, config=app_settings(device="cpu"))
    with pytest.raises(gr.Error) as caught:
        studio.upscale(str(big), "default-upscale-x4", 4, "auto", None)
    return caught.value.message


@pytest.mark.zerogpu
def test_spaces_refusing_to_start_leaves_the_app_on_the_cpu(tmp_path):
    """SPACES_ZERO_GPU=true without the package's other settings: `import spaces` raises AssertionError."""
    pytest.importorskip("spaces", reason="CI installs it (requirements-dev.txt)")
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from gan_models import zerogpu\n"
            "print('ACTIVE', zerogpu.active(), zerogpu.active(), zerogpu.overrides())\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_space_env(tmp_path, SPACES_ZERO_GPU="true"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ACTIVE False False {}" in proc.stdout
    refusals = [line for line in proc.stderr.splitlines() if "ZeroGPU off" in line]
    assert len(refusals) == 1 and "SPACES_ZERO_DEVICE_API_URL env must be set" in refusals[0]
    assert "Traceback" not in proc.stderr


# --- the glue, with a stub package -----------------------------------------------------------------------------------


def test_prepare_runs_first_and_a_refusal_reserves_nothing(monkeypatch):
    calls = stub_spaces(monkeypatch)
    ledger, order = zerogpu.GpuLedger(), []

    def upscale(image, model, outscale=4, weights_file=None):
        order.append("gpu")
        return f"{image} {model} x{outscale}"

    def prepare(model, weights_file, **_):
        order.append(("prepare", model, weights_file))
        if model == "bad":
            raise ValueError("bad is unavailable")
        return None

    wrapped = zerogpu.gpu(upscale, duration=lambda *a, **k: 42, prepare=prepare, ledger=ledger)
    assert wrapped("a.png", "good", 2) == "a.png good x2"
    assert order == [("prepare", "good", None), "gpu"] and calls == [("upscale", 42)]
    with pytest.raises(ValueError, match="bad is unavailable"):
        wrapped("a.png", "bad")
    assert calls == [("upscale", 42)] and ledger.calls == 1


def test_the_call_moves_the_model_once_and_reports_back(monkeypatch, tiny_specs):
    from gan_models import translator_for

    stub_spaces(monkeypatch)
    ledger = zerogpu.GpuLedger()
    cpu = translator_for(tiny_specs["upscale"], backend="torch", device="cpu")
    seen = []

    def upscale(image, model, weights_file=None):
        translator = zerogpu.on_device(cpu)
        seen.append(translator)
        if image == "broken":
            raise RuntimeError("the image is broken")
        return translator.spec.id

    wrapped = zerogpu.gpu(upscale, duration=30, prepare=lambda **_: cpu, ledger=ledger)
    assert zerogpu.on_device(cpu) is cpu  # outside a GPU call: the translator itself
    assert wrapped("a.png", "m") == cpu.spec.id
    first = ledger.last_run(cpu.spec.id)
    assert first.model == cpu.spec.id and first.error is None and first.moved_s is not None
    assert first.worker == os.getpid() and first.describe().startswith("last GPU call: ")
    assert wrapped("a.png", "m") == cpu.spec.id
    assert seen[0] is seen[1] is not cpu  # moved once, then kept while the worker lives
    assert ledger.last_run(cpu.spec.id).moved_s is None
    with pytest.raises(RuntimeError, match="the image is broken"):
        wrapped("broken", "m")
    assert ledger.last_run(cpu.spec.id).describe().endswith("): the image is broken")
    assert ledger.calls == 3
    # the network the main process loaded is sized for the duration function
    size = ledger.size(cpu.spec.id)
    assert size.weight_bytes == sum(p.numel() * 4 for p in cpu.backend.model.parameters()) > 0
    assert size.flops_per_output_pixel > 0


def test_without_zerogpu_handlers_are_unchanged(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def handler(image, model):
        return model

    assert not zerogpu.active() and zerogpu.overrides() == {}
    assert zerogpu.gpu(handler, duration=60, prepare=lambda **_: None) is handler


def test_the_package_decides_and_the_main_process_runs_torch_on_the_cpu(monkeypatch):
    stub_spaces(monkeypatch)
    assert zerogpu.active() and zerogpu.overrides() == {"backend": "torch", "device": "cpu"}
    sys.modules["spaces"].config.Config.zero_gpu = False
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # the package's Config decides, not a stray variable
    assert not zerogpu.active() and zerogpu.overrides() == {}
    del sys.modules["spaces"].config  # an older package without Config: the variable (read in settings.py)
    assert zerogpu.active()
    monkeypatch.setenv("SPACES_ZERO_GPU", "false")
    assert not zerogpu.active()


# --- the duration function -------------------------------------------------------------------------------------------


def test_gpu_seconds_add_start_transfer_compute_and_encoding(monkeypatch):
    rrdb = SPECS["realesrgan-x4"]
    size = zerogpu.spec_network_size(rrdb)
    # RRDBNet: 2.24 MFLOP per output pixel (FlopCounterMode on the meta device), 67 MB of fp32 weights
    assert size.flops_per_output_pixel == pytest.approx(2.24e6, rel=0.01)
    assert size.weight_bytes == pytest.approx(67e6, rel=0.01)
    assert all(zerogpu.spec_network_size(spec).flops_per_output_pixel > 1e4 for spec in SPECS.values())
    out = 1024 * 1024 * 16  # a 1024² x4 upscale
    expected = (zerogpu.GPU_START_S + size.weight_bytes / zerogpu.HOST_TO_DEVICE_BYTES_PER_S
                + zerogpu.GPU_COMPUTE_MARGIN * size.flops_per_output_pixel * out / (zerogpu.GPU_EFFECTIVE_TFLOPS * 1e12)
                + zerogpu.PNG_ENCODE_S_PER_MP * out / 1e6)
    assert zerogpu.gpu_seconds(rrdb, out) == int(-(-expected // 1))
    assert zerogpu.gpu_seconds(rrdb, out) < 60  # the goal for this case, on these estimates
    assert zerogpu.gpu_seconds(rrdb, out, encoded_pixels=3 * out) > zerogpu.gpu_seconds(rrdb, out)
    monkeypatch.setattr(zerogpu, "HOST_TO_DEVICE_BYTES_PER_S", 5e5)  # a slow bus: 134 s to move the weights
    assert zerogpu.gpu_seconds(rrdb, 64 * 64) == zerogpu.GPU_MAX_S
    assert zerogpu.gpu_seconds(None, out) == zerogpu.gpu_seconds(rrdb, None) == zerogpu.GPU_BASE_S


def test_gpu_durations_follow_each_tab_and_the_loaded_network(tmp_path, monkeypatch, tiny_specs):
    from gan_models import translator_for

    big, small, wide = tmp_path / "big.png", tmp_path / "small.png", tmp_path / "wide.png"
    Image.new("RGB", (2000, 2000)).save(big)
    Image.new("RGB", (64, 64)).save(small)
    Image.new("RGB", (2000, 1000)).save(wide)
    monkeypatch.setattr(zerogpu, "GPU_EFFECTIVE_TFLOPS", 0.1)  # a slow GPU makes differences whole seconds
    durations = zerogpu.gpu_durations(SPECS, max_style_side=1024, preview_side=2048)
    up = durations["upscale"]
    assert up(str(small), "realesrgan-x4") < up(str(big), "realesrgan-x4", 4, "auto") <= zerogpu.GPU_MAX_S
    assert up(str(small), "default-upscale-x4") < up(str(small), "realesrgan-x4")
    # the network's own output, and the PNGs written: the result at outscale and two previews of <= 2048²
    pixels = 64 * 64 * 16
    assert up(str(small), "realesrgan-x4", 2) == zerogpu.gpu_seconds(SPECS["realesrgan-x4"], pixels,
                                                                      encoded_pixels=3 * 64 * 64 * 4)
    assert up(None, "realesrgan-x4") == up(str(tmp_path / "missing.png"), "nope") == zerogpu.GPU_BASE_S
    style, monet = durations["style_transfer"], SPECS["style-monet"]
    assert style(str(wide), "style-monet", "original") == zerogpu.gpu_seconds(monet, 1024 * 512)
    assert style(str(wide), "style-monet", "256") == zerogpu.gpu_seconds(monet, 512 * 256)
    sketch, shoes = durations["sketch_to_photo"], SPECS["edges2shoes"]
    canvas = {"background": None, "layers": [], "composite": Image.new("RGB", (512, 2048))}
    assert sketch(canvas, "edges2shoes", True) == zerogpu.gpu_seconds(shoes, 256 * 1024)  # long side <= 4x
    assert sketch(canvas, "edges2shoes", False) == zerogpu.gpu_seconds(shoes, 512 * 2048)
    # an uploaded custom model is found by its file (the weights_file argument) and sized from the network the
    # main process loaded, once the ledger has it
    ledger, spec = zerogpu.GpuLedger(), tiny_specs["upscale"]
    upload = str(spec.bundled)
    uploaded = dataclasses.replace(spec, id=upload)
    sized = zerogpu.gpu_durations({upload: uploaded}, max_style_side=64, ledger=ledger)["upscale"]
    by_arch = sized(str(small), "custom", 4, "auto", upload)
    assert by_arch == zerogpu.gpu_seconds(uploaded, pixels, encoded_pixels=3 * pixels) > zerogpu.GPU_START_S
    translator = translator_for(uploaded, backend="torch", device="cpu")
    learned = ledger.learn(upload, translator.backend.model, uploaded)
    assert learned == zerogpu.spec_network_size(uploaded)  # the same network, counted from the loaded module
    assert sized(str(small), "custom", 4, "auto", upload) == zerogpu.gpu_seconds(
        uploaded, pixels, size=learned, encoded_pixels=3 * pixels)

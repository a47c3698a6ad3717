"""Shared fixtures and helpers: tiny seeded models saved as local specs, a fake offline Hub cache with tiny models in
their publishers' layouts, sample images and train.py datasets, the app's test models and server, a stub `spaces`.

Everything here is offline and CPU-only. Hub files are written in the exact layout huggingface_hub uses
(`models--owner--name/snapshots/<sha>/<file>` + `refs/main`), so the real client code resolves them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gan_models import zerogpu
from gan_models.archs import build_arch
from gan_models.settings import Settings
from gan_models.specs import HubFile, ModelSpec, spec_from_config
from gan_models.weights import build_generator, save_model_folder

# Tests build many throw-away tiny models: plain PyTorch, unless a test asks for ONNX (tests/test_export.py unsets
# this). Without it backend "auto" would export every tiny model to ONNX, into the user's cache, on first use.
os.environ.setdefault("GAN_STUDIO_BACKEND", "torch")
# Tiny models run fastest on one thread, and on a busy machine by far: with two threads on two shared cores, their
# barriers made a tiny model's tournament 15x slower (10.1 s against 0.67 s). Every runtime takes torch's count
# unless told otherwise; tests about threads pass their own.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"

# Small widths with the same key structure as the real networks, for checkpoints written in the real layouts.
TINY_KWARGS: dict[str, dict] = {
    "resnet_generator": {"in_channels": 3, "out_channels": 3, "ngf": 8, "n_blocks": 2},
    "unet_generator": {"in_channels": 3, "out_channels": 3, "num_downs": 5, "ngf": 8},
    "huggan_unet": {"in_channels": 3, "out_channels": 3},
    "srresnet": {"in_channels": 3, "out_channels": 3, "channels": 8, "num_rcb": 2, "upscale": 4},
    "rrdbnet": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": 4},
    "srvgg_compact": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 2, "upscale": 4, "act_type": "prelu"},
}

TINY_FIELDS: dict[str, dict] = {
    "upscale": {"arch": "srvgg_compact", "arch_kwargs": TINY_KWARGS["srvgg_compact"], "value_range": [0, 1],
                "scale": 4, "size_multiple": 1, "tile": 32, "tile_overlap": 8},
    "style": {"arch": "resnet_generator", "arch_kwargs": TINY_KWARGS["resnet_generator"], "value_range": [-1, 1],
              "scale": 1, "size_multiple": 4, "tile": None},
    "sketch2photo": {"arch": "unet_generator",
                     "arch_kwargs": {**TINY_KWARGS["unet_generator"], "norm": "instance"},
                     "value_range": [-1, 1], "scale": 1, "size_multiple": 32, "tile": None, "input_size": 64},
}


def tiny_spec_fields(task: str) -> dict:
    return {"id": f"tiny-{task}", "title": f"Tiny {task}", "task": task, "licence": "test", **TINY_FIELDS[task]}


def make_tiny_model(folder: Path, task: str, *, seed: int = 0) -> ModelSpec:
    """A seeded random-init model of `task` written as a train.py output folder, loaded back as a spec."""
    fields = tiny_spec_fields(task)
    torch.manual_seed(seed)
    spec = ModelSpec(**{**fields, "value_range": tuple(fields["value_range"])})
    save_model_folder(build_generator(spec), folder, spec_fields=fields)
    return spec_from_config(folder)


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory) -> dict[str, ModelSpec]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {task: make_tiny_model(root / task, task) for task in TINY_FIELDS}


def hub_cache_path(cache: Path, spec: ModelSpec | HubFile) -> Path:
    """Where huggingface_hub keeps the file of `spec` (its first source) or of one HubFile in `cache`; writes
    refs/main when the revision is a branch."""
    folder = cache / f"{spec.repo_type}s--{spec.repo_id.replace('/', '--')}"
    revision = spec.revision or "main"
    sha = revision
    if len(revision) != 40:
        sha = FAKE_SHA
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / revision).write_text(sha)
    target = folder / "snapshots" / sha / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache under HF_HOME with HF_HUB_OFFLINE=1; returns the hub cache folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    return cache


def tiny_variant(spec: ModelSpec) -> ModelSpec:
    """`spec` with a small network of the same key layout (real files are 6-220 MB)."""
    kwargs = TINY_KWARGS[spec.arch]
    if spec.arch == "unet_generator":
        kwargs = {**kwargs, "norm": spec.arch_kwargs.get("norm", "batch")}
    if "scale" in spec.arch_kwargs:
        kwargs = {**kwargs, "scale": spec.arch_kwargs["scale"]}
    return dataclasses.replace(spec, arch_kwargs=kwargs)


def rgb_image(w: int = 40, h: int = 28, *, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth seeded test picture (gradients + blobs), converted to `mode`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), 0.5 + 0.5 * np.sin((xx + yy) / 5)], axis=-1)
    base += rng.normal(0, 0.03, base.shape).astype(np.float32)
    img = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8), "RGB")
    return img.convert(mode) if mode != "RGB" else img


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_settings(**changes) -> Settings:
    """The app's settings for a test: plain PyTorch (tiny throw-away models are not worth an ONNX export each)."""
    return Settings(**{"backend": "torch", **changes})


@contextlib.contextmanager
def serve(specs: Mapping[str, ModelSpec], config: Settings, hf_home: Path) -> Iterator[str]:
    """Run the app (in this process) on a free loopback port with the Hub offline; yields its URL.

    app is imported here so that library-only test runs do not import Gradio.
    """
    from app import build_demo, launch_options

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(hf_home))
        mp.delenv("HF_HUB_CACHE", raising=False)
        demo = build_demo(specs=specs, config=config)
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                    **launch_options(config))
        try:
            yield demo.local_url
        finally:
            demo.close()


def skip_without_shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def preparer(tmp_path, monkeypatch):
    """A fresh process-wide Preparer over a private export cache, with backend "auto" left to the tournament."""
    from gan_models.runtimes import Preparer, worker
    from gan_models.runtimes.onnx_export import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("GAN_STUDIO_BACKEND", raising=False)
    fresh = Preparer()
    monkeypatch.setattr(worker, "_DEFAULT", fresh)
    return fresh


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def run_in_threads(work: Callable[[int], None], count: int) -> None:
    """Call `work(0) ... work(count - 1)` in `count` threads at once; re-raise the first exception one raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# --- train.py datasets -------------------------------------------------------------------------------------------

TRAIN_TINY = {  # train.py arguments that shrink each mode's networks
    "cyclegan": ["--arch-kwargs", '{"ngf": 4, "n_blocks": 1}'],
    "pix2pix": ["--arch-kwargs", '{"ngf": 4, "num_downs": 5}'],
    "srgan": ["--arch-kwargs", '{"num_feat": 8, "num_conv": 2}'],
}
TRAIN_COMMON = ["--crop", "32", "--batch-size", "2", "--workers", "0", "--d-width", "8", "--log-every", "1"]


def picture(w: int, h: int, seed: int) -> Image.Image:
    """A smooth seeded picture with a few flat blocks: something with edges and texture to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6)
    arr = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin((xx + yy) / 5 + phase)], axis=-1)
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        arr[y:y + rng.integers(4, 12), x:x + rng.integers(4, 12)] = rng.uniform(0, 1, 3)
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))


def make_data(root: Path, layout: str, *, n: int = 3, size: tuple[int, int] = (48, 40)) -> Path:
    """Write a tiny dataset in one of train.py's layouts and return the --data folder."""
    w, h = size
    if layout == "cyclegan":  # domain B: colour-inverted pictures, some in portrait, some JPEG
        (root / "trainA").mkdir(parents=True)
        (root / "trainB").mkdir()
        for i in range(n):
            picture(w, h, i).save(root / "trainA" / f"{i}.png")
            Image.fromarray(255 - np.asarray(picture(h, w, 10 + i))).save(root / "trainB" / f"b{i}.jpg")
    elif layout == "ab":  # target | input side by side; the B half is a colour-inverted A half
        root.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.asarray(picture(w, h, i))
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(root / f"{i}.png")
    elif layout == "folders":
        for side in "AB":
            (root / side).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.asarray(picture(w, h, i))
            Image.fromarray(a).save(root / "A" / f"p{i}.png")
            Image.fromarray(255 - a).save(root / "B" / f"p{i}.png")
    else:  # plain photos (srgan, --edges-from-photos)
        root.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            picture(w, h, i).save(root / f"{i}.png")
    return root


# --- fake Hub repos in their publishers' layouts --------------------------------------------------------------------

def put(cache: Path, repo_id: str, filename: str, *, repo_type: str = "model", revision: str = "main") -> Path:
    """Where the Hub cache keeps `filename` of `repo_id` at `revision` (a branch: refs/<branch> → FAKE_SHA)."""
    location = SimpleNamespace(repo_type=repo_type, repo_id=repo_id, revision=revision, filename=filename)
    return hub_cache_path(cache, location)


def tiny_net(arch: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_arch(arch, **(kwargs or TINY_KWARGS[arch])).eval()


class Evil:
    """Pickles to a call of print: what a malicious .pth file carries."""

    def __reduce__(self):
        return (print, ("pwned",))


STYLE_ID = "me/tiny-cyclegan/checkpoints/style_x/latest_net_G.pth"
SKETCH_ID = "me/tiny-pix2pix/latest_net_G.pth"
UPSCALE_ID = "me/tiny-esrgan/RealESRGAN_x4.pth"


def write_hub_models(cache: Path) -> None:
    """Tiny generators in their publishers' layouts, and three files the app must refuse."""
    torch.save(tiny_net("resnet_generator").state_dict(), put(cache, "me/tiny-cyclegan", STYLE_ID.split("/", 2)[2]))
    torch.save(tiny_net("unet_generator").state_dict(), put(cache, "me/tiny-pix2pix", "latest_net_G.pth"))
    torch.save({"params_ema": tiny_net("rrdbnet").state_dict()}, put(cache, "me/tiny-esrgan", "RealESRGAN_x4.pth"))
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)}, put(cache, "me/bert", "model.bin"))
    torch.save({"x": torch.zeros(800_000)}, put(cache, "me/huge", "model.pth"))  # 3.2 MB: over the 2 MB cap



# --- the app -------------------------------------------------------------------------------------------------------

def build_app_models(root: Path) -> dict[str, ModelSpec]:
    """Tiny working models for each task and the failure cases, keyed by id."""
    style = make_tiny_model(root / "style", "style")
    sketch = make_tiny_model(root / "sketch", "sketch2photo")
    upscale = make_tiny_model(root / "upscale", "upscale")
    broken_file = root / "broken" / "model.safetensors"
    broken_file.parent.mkdir(parents=True, exist_ok=True)
    broken_file.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(64))
    hub = {"sources": (HubFile(repo_id="nobody/not-a-real-repo", filename="model.bin", revision="main"),),
           "bundled": None}
    specs = [
        style,
        dataclasses.replace(style, id="hub-style", title="Hub style (falls back)", fallback=style.id, **hub),
        sketch,
        upscale,
        dataclasses.replace(upscale, id="hub-upscale", title="Hub upscale (no fallback)", fallback=None, **hub),
        dataclasses.replace(upscale, id="broken-upscale", title="Broken upscale", bundled=broken_file),
    ]
    return {spec.id: spec for spec in specs}


def stub_spaces(monkeypatch) -> list[tuple]:
    """A `spaces` package whose GPU() runs the function at once, in this process, as a worker would."""
    calls: list[tuple] = []

    def GPU(fn, *, duration=None):  # noqa: N802 - the package's own name
        def gradio_handler(*args, **kwargs):
            calls.append((fn.__name__, duration(*args, **kwargs) if callable(duration) else duration))
            return fn(*args, **kwargs)

        return gradio_handler

    module = types.ModuleType("spaces")
    module.GPU = GPU
    module.config = types.SimpleNamespace(Config=types.SimpleNamespace(zero_gpu=True))
    monkeypatch.setitem(sys.modules, "spaces", module)
    monkeypatch.setattr(zerogpu, "DEVICE", "cpu")
    return calls

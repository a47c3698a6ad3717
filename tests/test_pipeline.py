"""Translator: any size in, exact size out; modes kept; tiling parity; OOM retry; concurrency."""

from __future__ import annotations

import platform
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from gan_models import GanModelsError, Translator, translator_for
from gan_models.runtimes import BackendOutOfMemory, TorchBackend
from gan_models.weights import load_model

from .conftest import REPO, rgb_image, run_in_threads


def _translator(spec) -> Translator:
    return Translator(spec, TorchBackend(load_model(spec, allow_fallback=False).module, device="cpu"))


@pytest.mark.parametrize("task", ["upscale", "style", "sketch2photo"])
@pytest.mark.parametrize("size", [(1, 1), (37, 23), (70, 5)])
def test_any_size_in_exact_size_out(tiny_specs, task, size):
    spec = tiny_specs[task]
    out = _translator(spec)(rgb_image(*size))
    assert out.size == (size[0] * spec.scale, size[1] * spec.scale)
    assert out.mode == "RGB"


@pytest.mark.parametrize(
    ("mode", "expected"), [("RGBA", "RGBA"), ("L", "L"), ("LA", "LA"), ("P", "RGB"), ("CMYK", "RGB")]
)
def test_modes_are_kept(tiny_specs, mode, expected):
    img = rgb_image(20, 12, mode=mode)
    if mode == "RGBA":
        alpha = np.zeros((12, 20), np.uint8)
        alpha[:, 10:] = 255
        img.putalpha(Image.fromarray(alpha))
    for task in ("upscale", "style"):
        spec = tiny_specs[task]
        out = _translator(spec)(img)
        assert out.mode == expected, (task, mode)
        assert out.size == (20 * spec.scale, 12 * spec.scale)
    if mode == "RGBA":
        up = np.asarray(_translator(tiny_specs["upscale"])(img).getchannel("A"))
        assert up[:, :30].max() <= 8 and up[:, 50:].min() >= 247  # alpha upscaled, edges kept apart


def test_sixteen_bit_grayscale_stays_sixteen_bit(tiny_specs):
    ramp = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    img = Image.fromarray(ramp)  # uint16 -> mode I;16
    out = _translator(tiny_specs["upscale"])(img)
    assert out.mode in ("I;16", "I")
    assert out.size == (96, 64)
    assert np.asarray(out).max() > 255  # real 16-bit values, not an 8-bit image


def test_outscale_resizes_the_result(tiny_specs):
    out = _translator(tiny_specs["upscale"])(rgb_image(30, 20), outscale=2)
    assert out.size == (60, 40)
    with pytest.raises(GanModelsError, match="outscale"):
        _translator(tiny_specs["upscale"])(rgb_image(30, 20), outscale=0)


def test_tiled_matches_untiled_away_from_borders(tiny_specs):
    spec = tiny_specs["upscale"]
    translator = _translator(spec)
    x = np.random.default_rng(0).random((1, 3, 90, 70), dtype=np.float32)
    whole = translator.run_array(x, tile=None)
    tiled = translator.run_array(x, tile=32)
    assert whole.shape == tiled.shape == (1, 3, 360, 280)
    m = 8 * spec.scale
    assert np.abs(whole - tiled)[..., m:-m, m:-m].max() < 1 / 255


def test_out_of_memory_halves_the_tile(tiny_specs):
    spec = tiny_specs["upscale"]
    inner = TorchBackend(load_model(spec, allow_fallback=False).module, device="cpu")
    seen: list[tuple[int, ...]] = []

    class SmallMemory:
        name, device, precision = "torch", "cpu", "fp32"

        def __call__(self, x):
            seen.append(x.shape)
            if x.shape[-1] > 64:
                raise BackendOutOfMemory("simulated")
            return inner(x)

    x = np.random.default_rng(1).random((1, 3, 100, 150), dtype=np.float32)
    out = Translator(spec, SmallMemory()).run_array(x, tile=256)
    assert out.shape == (1, 3, 400, 600)
    assert max(s[-1] for s in seen) > 64 and seen[-1][-1] <= 64
    np.testing.assert_allclose(out, Translator(spec, inner).run_array(x, tile=64), atol=1e-6)


def test_concurrent_calls_match_single_thread(tiny_specs):
    spec = tiny_specs["upscale"]
    translator = _translator(spec)
    images = [rgb_image(24 + 3 * i, 20, seed=i) for i in range(6)]
    expected = [np.asarray(translator(img, tile=16)) for img in images]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = np.asarray(translator(images[i], tile=16))

    run_in_threads(work, len(images))
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(results[i], want)


def test_translator_for_local_folder(tiny_specs):
    translator = translator_for(str(tiny_specs["style"].bundled.parent), backend="torch", device="cpu")
    assert translator.spec.id == "tiny-style" and translator.source.origin == "local"
    with pytest.raises(GanModelsError, match="backend"):
        translator_for(str(tiny_specs["style"].bundled.parent), backend="nope", device="cpu")


def test_tiled_upscale_working_memory_is_about_two_result_buffers(tiny_specs):
    # The float32 result canvas, its blend weights and the HWC copy are the only image-sized buffers: huge results
    # (2048² → 8192² is 0.8 GB per float copy) must not pile up temporaries in conversion and clipping.
    spec = tiny_specs["upscale"]
    translator = _translator(spec)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8))
    translator(img, tile=64)  # warm-up: lazy allocations of torch and numpy are not the point
    tracemalloc.start()
    try:
        out = translator(img, tile=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result_bytes = out.width * out.height * 3 * 4  # one float32 RGB copy of the result
    assert out.size == (384 * spec.scale, 384 * spec.scale)
    assert peak < 2.5 * result_bytes, f"peak {peak / result_bytes:.2f}x the float32 result"


_FAULTS_SCRIPT = """
import resource, sys
import torch
from gan_models.runtimes import tune_malloc
tuned = sys.argv[1] == "tuned" and tune_malloc()
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
def run():  # 4 MiB activations, new buffer per layer: the allocation pattern of every generator here
    x = torch.ones(1, 16, 256, 256)
    with torch.no_grad():
        for _ in range(6):
            x = torch.relu(conv(x))
for i in range(12):
    if i == 4:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run()
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow  # two processes, each 8 runs of a real network: 30 s on a busy machine
@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_malloc_stops_page_faults_between_runs():
    def faults(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
        return int(out[0]), int(out[1])

    (_, default), (applied, tuned) = faults("default"), faults("tuned")
    assert applied == 1
    # glibc's defaults return freed activations to the kernel: ~90k faults over 8 runs here; tuned: none
    assert tuned < 1000 and tuned * 10 < default, (tuned, default)


def test_tune_malloc_is_a_no_op_without_mallopt(monkeypatch):
    import ctypes

    from gan_models.runtimes import malloc

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())  # a libc without mallopt (musl)
    assert malloc.tune_malloc() is False


class _Recording:
    """A backend that records the shapes it is given and returns them upscaled by `scale` (nearest)."""

    name, device, precision = "torch", "cpu", "fp32"

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return x.repeat(self.scale, axis=2).repeat(self.scale, axis=3)


def test_whole_image_is_padded_to_the_size_multiple_and_cropped_back(tiny_specs):
    spec = tiny_specs["sketch2photo"]  # size multiple 32
    backend = _Recording(spec.scale)
    x = np.random.default_rng(2).random((1, 3, 37, 70), dtype=np.float32)
    out = Translator(spec, backend).run_array(x, tile=None)
    assert backend.shapes == [(1, 3, 64, 96)]  # each side rounded up to a multiple of 32
    np.testing.assert_array_equal(out, x)  # the padding is cut off again


def test_tile_budget_decides_automatic_tiling(tiny_specs):
    spec = tiny_specs["upscale"]  # tile advice 32: auto tiling allowed
    x = np.zeros((1, 3, 300, 300), np.float32)
    roomy = _Recording(spec.scale)
    Translator(spec, roomy, tile_budget_mb=4096).run_array(x)
    assert roomy.shapes == [(1, 3, 300, 300)]
    tight = _Recording(spec.scale)
    Translator(spec, tight, tile_budget_mb=16).run_array(x)
    assert len(tight.shapes) > 1 and max(s[-1] for s in tight.shapes) < 300

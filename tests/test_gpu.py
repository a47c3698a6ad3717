"""CUDA checks: the torch fp16 path and onnxruntime's CUDA provider against the CPU fp32 result.

Marked `gpu` (kept out of the default run): `python3 -m pytest -q -m gpu` on a machine with a CUDA device. They skip
with the reason where torch has no CUDA, or where onnxruntime has no CUDAExecutionProvider (pip install
onnxruntime-gpu in place of onnxruntime).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gan_models.runtimes.onnx_export as ox
from gan_models import Translator
from gan_models.runtimes import OnnxBackend, TorchBackend, import_onnxruntime
from gan_models.weights import load_model

from .conftest import rgb_image

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]
TASKS = ["style", "sketch2photo", "upscale"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _cpu_reference(spec, img) -> np.ndarray:
    return np.asarray(Translator(spec, TorchBackend(load_model(spec, allow_fallback=False).module, device="cpu"))(img))


@pytest.fixture(scope="module")
def image():
    return rgb_image(96, 64, seed=3)


@pytest.mark.parametrize("task", TASKS)
def test_torch_cuda_fp32_and_fp16_match_cpu(tiny_specs, image, task):
    spec = tiny_specs[task]
    ref = _cpu_reference(spec, image)
    module = load_model(spec, allow_fallback=False).module
    fp32 = np.asarray(Translator(spec, TorchBackend(module, device="cuda"))(image))
    fp16 = np.asarray(Translator(spec, TorchBackend(copy.deepcopy(module), device="cuda", half=True))(image))
    assert fp32.shape == fp16.shape == ref.shape
    assert np.abs(fp32.astype(int) - ref.astype(int)).max() <= 1
    assert _psnr(fp16, ref) >= 40.0


@pytest.mark.parametrize("task", TASKS)
def test_onnx_cuda_provider_matches_cpu(tiny_specs, image, task, tmp_path):
    if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    spec = tiny_specs[task]
    ref = _cpu_reference(spec, image)
    files = {e.precision: e for e in ox.export_model(spec, tmp_path, precisions=("fp32", "fp16"))}
    assert files["fp32"].passed, files["fp32"].failure
    backend = OnnxBackend(files["fp32"].onnx_path, device="cuda", cache=False)
    assert backend.device == "cuda"
    assert "CUDAExecutionProvider" in backend._session.get_providers()
    out = np.asarray(Translator(spec, backend)(image))
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    if files["fp16"].passed:
        half = OnnxBackend(files["fp16"].onnx_path, device="cuda", precision="fp16", cache=False)
        assert _psnr(np.asarray(Translator(spec, half)(image)), ref) >= 40.0


def test_tournament_on_cuda_judges_fp16_and_picks_a_cuda_backend(tiny_specs, tmp_path):
    from gan_models.runtimes import tournament as tn
    from gan_models.weights import load_model

    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    outcome = tn.run_tournament(spec, loaded.module, loaded.source, device="cuda", root=tmp_path)
    verdicts = {(c["runtime"], c["precision"]): c for c in outcome.record["candidates"]}
    assert verdicts[("torch", "fp16")]["verdict"] in (tn.CHOSEN, tn.TOO_SLOW, tn.TOO_INACCURATE)
    assert verdicts[("onnxruntime", "int8")]["verdict"] == "not available on this GPU"
    if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
        assert verdicts[("onnxruntime", "fp32")]["verdict"] == "not available on this GPU"
    assert outcome.backend.device == "cuda" and verdicts[(outcome.runtime, outcome.precision)]["verdict"] == tn.CHOSEN
    again = tn.run_tournament(spec, loaded.module, loaded.source, device="cuda", root=tmp_path)
    assert again.reused and (again.runtime, again.precision) == (outcome.runtime, outcome.precision)

"""Export any spec to ONNX, check it against PyTorch through the same Translator, write a JSON sidecar.

The library's own export code: the background worker (worker.py) and the tournament (tournament.py) make their graphs
here, and `python -m export` is a thin command line over `export_model`. Layout of a cache folder (the background
worker's, `GAN_STUDIO_ONNX_CACHE`, or any `python -m export -o DIR`: the same, so one can stand in for the other):

    DIR/<spec id>/<spec id>.<precision>.onnx     the model (inputs and outputs float32, dynamic N, H, W)
    DIR/<spec id>/<spec id>.<precision>.json     sidecar: spec, opset, sha256, weights, parity, quantization
    DIR/<spec id>/tournament.<device>.json       which runtime and precision `backend="auto"` picked here, and why

Precisions:
    fp32  torch.onnx.export(dynamo=True); parity: max |onnx - torch| <= FP32_TOLERANCE x value range.
    fp16  fp32 graph with fp16 weights and math, float32 inputs/outputs (for CUDA; slow on CPU).
    int8  static QDQ quantization of the fp32 graph (per-channel s8 weights, u8 activations: the AVX-512 VNNI
          u8 x s8 kernels), MinMax-calibrated on images shipped in examples/ (not on the parity image). The convs
          on the image itself (first; last if it writes RGB) stay float; PRelu becomes Max(x, a*x) (faster in ORT).
    bf16  refused: onnxruntime has no bfloat16 Conv kernel (CPU EP: NOT_IMPLEMENTED for Conv(22), measured with
          onnxruntime 1.32), so a bf16 file could be neither checked nor run here.
    Reduced precisions must keep PSNR >= MIN_PSNR_DB against the torch fp32 output on the parity image.

Heavy imports (torch.onnx, onnx, onnxruntime) happen inside functions, so importing the library stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackendUnavailableError, GanModelsError, OnnxExportError, first_line
from ..files import atomic_write, sha256_file
from ..settings import ENV, onnx_cache_dir, user_cache_dir
from ..specs import ModelSpec
from ..tiling import requested_tile, run_array

FORMAT = "gan_models.onnx/1"
# How each precision is made; bumping one re-exports that precision in every cache (older files are stale).
# int8 2: PRelu rewritten as Max(x, a*x) before quantization. 3: the first conv stays float. 4: and an RGB last conv.
# 5: large upscalers calibrate on the same pixels in 32x32 quarters, without onnxruntime's memory pattern (memory).
RECIPES = {"fp32": 1, "fp16": 1, "int8": 5, "bf16": 1, "fp32-subpixel": 1}
# An fp32 graph in which every ConvTranspose(k=4, s=2, p=1) (the U-Nets' upsampling) is one 3x3 conv with 4x the
# channels and a pixel shuffle: the same function (exact to rounding). OpenVINO's CPU plugin runs those deconvolutions
# in f32 even at bf16 inference precision, and the convs in bf16; onnxruntime is slower on it, so only OpenVINO uses it.
SUBPIXEL = "fp32-subpixel"
FULL_PRECISION_GRAPHS = ("fp32", SUBPIXEL)
OPSET = 18
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "bf16")
RUNNABLE_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# fp32 ONNX vs torch differ only by summation order: ~1e-5 seen on every arch. The tolerance is per unit of the
# model's value range, so [-1, 1] models get 2e-3 and [0, 1] models 1e-3.
FP32_TOLERANCE = 1e-3
MIN_PSNR_DB = 40.0
# The repository's examples/ (calibration and parity images); a bare copy of the library uses synthetic images.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
CACHE_ENV = ENV["onnx_cache"]

# Fixed, shipped images: the parity image of each task is never used for int8 calibration.
_PARITY_IMAGE = {"style": "small_landscape.png", "sketch2photo": "shoe_sketch.png", "upscale": "small_landscape.png"}
_CALIBRATION_IMAGES = {
    "style": ("landscape.jpg", "logo_rgba.png", "house_sketch.png"),
    "sketch2photo": ("house_sketch.png",),  # + edge maps of the photos, made the way the app makes them
    "upscale": ("landscape.jpg", "logo_rgba.png", "gray16.png", "house_sketch.png"),
}
_SR_CALIBRATION_CROP = 64  # MinMax calibration keeps every activation of a batch: small crops bound its memory
# onnxruntime's calibration session held 2.06 GB more at 64x64 for RRDBNet (23 blocks, 64 features, 16.7M parameters),
# which took a background preparation to 4.5 GB: above this many weights, each crop is fed as its four 32x32 quarters.
_LARGE_MODEL_PARAMS = 4_000_000


@dataclass(frozen=True)
class Exported:
    """One exported file and what its sidecar says about it."""

    onnx_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]

    @property
    def precision(self) -> str:
        return self.sidecar["precision"]

    @property
    def passed(self) -> bool:
        return bool(self.sidecar.get("parity", {}).get("passed"))

    @property
    def failure(self) -> str:
        """Why this export is unusable, in one sentence ("" when it passed)."""
        if self.passed:
            return ""
        if self.sidecar.get("error"):
            return self.sidecar["error"]
        p = self.sidecar.get("parity", {})
        return p.get("reason") or "parity check failed"


# --- locations and identities -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """GAN_STUDIO_ONNX_CACHE, else $XDG_CACHE_HOME/gan-studio/onnx, else ~/.cache/gan-studio/onnx (never the repo)."""
    return onnx_cache_dir() or user_cache_dir() / "onnx"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def model_dir(root: Path, spec: ModelSpec) -> Path:
    return Path(root) / _safe(spec.id)


def onnx_path_for(root: Path, spec: ModelSpec, precision: str) -> Path:
    return model_dir(root, spec) / f"{_safe(spec.id)}.{precision}.onnx"


def state_sha256(module: Any) -> str:
    """sha256 of a network's tensors (names, shapes, dtypes, bytes): identifies the weights actually exported."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu()
        t = (t.float() if t.is_floating_point() else t).contiguous()  # fp16/CUDA copies hash like the fp32 export
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def weights_record(source: Any | None, module: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"state_sha256": state_sha256(module)}
    if source is None:
        record["origin"] = "in-memory (random init or unsaved)"
        return record
    path = Path(source.path)
    record.update(origin=source.origin, path=str(path))
    if path.is_file():
        st = path.stat()
        record.update(file_sha256=sha256_file(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
    return record


def spec_record(spec: ModelSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "task": spec.task,
        "arch": spec.arch,
        "arch_kwargs": dict(spec.arch_kwargs),
        "value_range": list(spec.value_range),
        "scale": spec.scale,
        "size_multiple": spec.size_multiple,
        "tile": spec.tile,
    }


def check_precision(precision: str) -> str:
    """`precision` if it can be exported and run here, else a clear error naming the valid choices."""
    if precision == "bf16":
        raise BackendUnavailableError(
            "bf16 is not offered: onnxruntime has no bfloat16 Conv kernel (CPU execution provider: NOT_IMPLEMENTED "
            "for Conv opset 22), so a bf16 model could neither be checked nor run; use int8 on CPU or fp16 on CUDA"
        )
    if precision not in RUNNABLE_PRECISIONS:
        raise GanModelsError(f"unknown precision {precision!r}; choose one of: {', '.join(RUNNABLE_PRECISIONS)}")
    return precision


# --- fixed inputs -----------------------------------------------------------------------------------------------


def _example_rgb(name: str) -> np.ndarray | None:
    from .. import imaging

    path = EXAMPLES_DIR / name
    if not path.is_file():
        return None
    rgb, _, _ = imaging.split_image(imaging.load_image(path))
    return rgb


def _synthetic_rgb(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), 0.5 + 0.5 * np.sin((xx + yy) / 7)], axis=-1)
    return np.clip(base + rng.normal(0, 0.03, base.shape).astype(np.float32), 0, 1)


def _resized_square(rgb: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    from .. import imaging

    return imaging.resize_rgb(rgb, (side, side), resample=Image.Resampling.BICUBIC)


def translation_side(spec: ModelSpec) -> int:
    m = max(1, spec.size_multiple)
    side = spec.input_size or 256
    return max(m, -(-side // m) * m)


def parity_input(spec: ModelSpec) -> tuple[np.ndarray, str]:
    """The fixed (1, 3, H, W) input of the parity check, in the model's range, and where it came from.

    Upscalers get the small shipped photo as it is (odd size, so padding and tiling are exercised); translation
    models get their task's image at the training size (sketches for sketch2photo).
    """
    from .. import imaging

    name = _PARITY_IMAGE[spec.task]
    rgb = _example_rgb(name)
    label = f"examples/{name}"
    if rgb is None:
        rgb, label = _synthetic_rgb(107, 160, seed=1234), "synthetic 160x107 (examples/ missing)"
    if spec.task != "upscale":
        side = translation_side(spec)
        rgb, label = _resized_square(rgb, side), f"{label} at {side}x{side}"
    return imaging.to_tensor_range(rgb, spec.value_range), label


# Held out from calibration too: the tournament judges every runtime and precision on these and the parity image.
_HOLDOUT_IMAGES = {"style": ("shoe_sketch.png",), "sketch2photo": ("gray16.png",), "upscale": ("shoe_sketch.png",)}
_SR_HOLDOUT_CROP = 96  # a centre crop: a large model's candidates each run it, and 4x of a whole photo costs seconds


def holdout_inputs(spec: ModelSpec) -> list[tuple[np.ndarray, str]]:
    """(1, 3, H, W) inputs no int8 calibration saw, in the model's range, with labels: the parity image first.

    Sketch-to-photo models get edge maps (made the way the app makes them) of the extra photos.
    """
    from PIL import Image

    from .. import imaging

    inputs = [parity_input(spec)]
    for name in _HOLDOUT_IMAGES[spec.task]:
        rgb = _example_rgb(name)
        if rgb is None:
            continue
        label = f"examples/{name}"
        if spec.task == "upscale":
            c = min(_SR_HOLDOUT_CROP, *rgb.shape[:2])
            top, left = (rgb.shape[0] - c) // 2, (rgb.shape[1] - c) // 2
            rgb, label = rgb[top:top + c, left:left + c], f"{label} centre {c}x{c}"
        else:
            if spec.task == "sketch2photo":
                edges = imaging.edges_from_photo(Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB"))
                rgb = np.asarray(edges.convert("RGB"), np.float32) / 255.0
                label = f"edges_from_photo({label})"
            side = translation_side(spec)
            rgb, label = _resized_square(rgb, side), f"{label} at {side}x{side}"
        inputs.append((imaging.to_tensor_range(np.ascontiguousarray(rgb), spec.value_range), label))
    return inputs


def calibration_inputs(spec: ModelSpec, *, split: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """(1, 3, H, W) batches for int8 MinMax calibration, from images shipped in examples/, and their names.

    `split` (upscalers): the same pixels in quarter-size crops, for models whose activations would not fit otherwise.
    """
    from PIL import Image

    from .. import imaging

    rgbs: list[tuple[str, np.ndarray]] = []
    for name in _CALIBRATION_IMAGES[spec.task]:
        rgb = _example_rgb(name)
        if rgb is not None:
            rgbs.append((f"examples/{name}", rgb))
    if spec.task == "sketch2photo":
        for name in ("landscape.jpg", "small_landscape.png"):
            path = EXAMPLES_DIR / name
            if path.is_file():
                edges = imaging.edges_from_photo(Image.open(path).convert("RGB"))
                rgbs.append((f"edges_from_photo(examples/{name})", np.asarray(edges, np.float32) / 255.0))
    if not rgbs:
        rgbs = [(f"synthetic seed {s}", _synthetic_rgb(160, 160, seed=s)) for s in range(4)]
    batches: list[np.ndarray] = []
    if spec.task == "upscale":
        c = _SR_CALIBRATION_CROP
        for _, rgb in rgbs:
            if min(rgb.shape[:2]) < c:
                rgb = _resized_square(rgb, c)
            h, w = rgb.shape[:2]
            for top, left in ((0, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)):
                crop = rgb[top:top + c, left:left + c]
                q = c // 2
                parts = [crop[y:y + q, x:x + q] for y in (0, q) for x in (0, q)] if split else [crop]
                batches.extend(imaging.to_tensor_range(np.ascontiguousarray(p), spec.value_range) for p in parts)
    else:
        side = translation_side(spec)
        for _, rgb in rgbs:
            small = _resized_square(rgb, side)
            batches.append(imaging.to_tensor_range(small, spec.value_range))
            batches.append(imaging.to_tensor_range(small[:, ::-1], spec.value_range))  # mirrored: more statistics
    return batches, [name for name, _ in rgbs]


def psnr_db(a: np.ndarray, b: np.ndarray, value_range: tuple[float, float]) -> float:
    """PSNR of `a` against `b` after clipping both to the value range (the pixels users get), in dB."""
    from .. import imaging

    lo, hi = value_range
    return imaging.psnr(np.clip(a, lo, hi), np.clip(b, lo, hi), peak=hi - lo)


def json_float(v: float) -> float | str:
    return v if np.isfinite(v) else "inf"


# --- the exporters ----------------------------------------------------------------------------------------------


def _example_side(spec: ModelSpec) -> int:
    m = max(1, spec.size_multiple)
    return max(m, -(-64 // m) * m)


def _export_fp32(module: Any, spec: ModelSpec, path: Path, opset: int) -> None:
    """torch.onnx.export with dynamic batch, height and width."""
    import torch
    from torch.export import Dim

    side = _example_side(spec)
    example = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    example = example * (spec.value_range[1] - spec.value_range[0]) + spec.value_range[0]
    # dynamo=True: the TorchScript exporter (dynamo=False) is deprecated and announces its removal in this torch,
    # and it traces Python booleans of tensor sizes into constants (it warns so on the ResNet and U-Net generators).
    # The torch.export path keeps N, H, W symbolic (Dim.DYNAMIC also accepts the derived "H multiple of 256" of
    # the U-Nets, where a named Dim would be rejected); it costs seconds per export, once per model and weights.
    # The module is in eval mode: BatchNorm uses its running statistics and Dropout is off. Pix2pix's own test
    # script keeps train mode by default (dropout as noise); exported models are deterministic instead.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},),
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise OnnxExportError(f"{spec.id}: torch.onnx.export returned nothing")
    dims = program.model.graph.inputs[0].shape
    with contextlib.suppress(Exception):  # names are cosmetic; an older onnx_ir may not rename
        program.rename_axes({dims[0]: "batch", dims[2]: "height", dims[3]: "width"})
    program.save(str(path), external_data=False)


def _derive_fp16(fp32_path: Path, path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    # keep_io_types: callers keep passing float32 arrays; the casts sit at the graph's edges. The converter
    # appends the input casts after their consumers, which onnx.checker rejects: sort the nodes again.
    model = OnnxModel(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True))
    model.topological_sort()
    del model.model.graph.value_info[:]  # stale float32 shape annotations of tensors that are fp16 now
    onnx.save(model.model, str(path))


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of arrays."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {"input": x}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all MinMax needs
        pass


class _SubPixelConvTranspose(nn.Module):
    """ConvTranspose2d(k=4, s=2, p=1) as Conv2d(k=3, p=1, 4x the output channels) + PixelShuffle(2).

    Output pixel (2i+a, 2j+b) of the transposed conv reads input pixels (i+d, j+e) for d, e in {-1, 0, 1} through
    kernel taps (a+1-2d, b+1-2e) where those lie in 0..3: one 3x3 conv per output phase (a, b), stacked as channels
    (c, a, b) in the order pixel_shuffle expects.
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = deconv.weight.detach()  # (Cin, Cout, 4, 4)
        cin, cout = w.shape[:2]
        k = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype)
        for a in range(2):
            for b in range(2):
                for d in (-1, 0, 1):
                    for e in (-1, 0, 1):
                        ky, kx = a + 1 - 2 * d, b + 1 - 2 * e
                        if 0 <= ky < 4 and 0 <= kx < 4:
                            k[:, a, b, :, d + 1, e + 1] = w[:, :, ky, kx].T
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1, bias=deconv.bias is not None)
        self.conv.weight.data = k.reshape(cout * 4, cin, 3, 3)
        if deconv.bias is not None:
            self.conv.bias.data = deconv.bias.detach().repeat_interleave(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)  # (B, 4C, H, W) -> (B, C, 2H, 2W)


def _is_subpixel_deconv(module: Any) -> bool:
    return (isinstance(module, nn.ConvTranspose2d) and module.kernel_size == (4, 4) and module.stride == (2, 2)
            and module.padding == (1, 1) and module.output_padding == (0, 0) and module.groups == 1
            and module.dilation == (1, 1))


def has_subpixel_deconvs(model: Any) -> bool:
    """Whether `model` has transposed convs that the sub-pixel graph writes as convs (the U-Nets do)."""
    return any(_is_subpixel_deconv(m) for m in model.modules())


def subpixel_weight_count(model: Any) -> int:
    """Parameters of `model` once its transposed convs are sub-pixel convs (36/16 of the weights, 4x the bias)."""
    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if _is_subpixel_deconv(m):
            total += (m.weight.numel() * 36) // 16 - m.weight.numel()
            total += 3 * m.bias.numel() if m.bias is not None else 0
    return total


def subpixel_deconvs(model: Any) -> int:
    """Replace, in place, every ConvTranspose2d(k=4, s=2, p=1) by its sub-pixel conv; returns how many."""
    count = 0
    for name, child in model.named_children():
        if _is_subpixel_deconv(child):
            setattr(model, name, _SubPixelConvTranspose(child))
            count += 1
        else:
            count += subpixel_deconvs(child)
    return count


def prelu_as_max(model: Any) -> int:
    """Rewrite every PRelu whose constant slopes are all <= 1 as Max(x, slope * x), in place; returns how many.

    Exact: for a <= 1, x >= 0 gives a*x <= x and x < 0 gives a*x >= x, so the max is PReLU(x) either way.
    Why: in a QDQ graph onnxruntime keeps PRelu in float, and its broadcast kernel is slow: on the bundled SRVGG
    upscaler (17 PReLUs of 48 x 256²) PRelu took 121 of 344 ms of the int8 run, Mul + Max take 34 ms; the int8
    run fell from 297 to 230 ms (median of 30, 2-core AVX2). The fp32 graph keeps PRelu: there onnxruntime turns
    the Mul into an extra conv and nothing is gained.
    """
    from onnx import helper, numpy_helper

    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    nodes, done = [], 0
    for node in model.graph.node:
        slope = consts.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or not np.all(numpy_helper.to_array(slope) <= 1):
            nodes.append(node)
            continue
        scaled = f"{node.output[0]}__slope_x"
        base = node.name or node.output[0]  # node names are optional in ONNX; output names are unique
        nodes.append(helper.make_node("Mul", [node.input[0], node.input[1]], [scaled], name=f"{base}__mul"))
        nodes.append(helper.make_node("Max", [node.input[0], scaled], list(node.output), name=f"{base}__max"))
        done += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return done


def _image_convs(model: Any) -> list[str]:
    """The convs that touch the image itself, kept float by int8: the first, and the last when it writes <= 4 channels.

    Quantizing the first conv alone cost most of the error: PSNR vs fp32 on the parity image, all convs int8 → first
    conv float: default-style 31.4 → 43.6 dB, default-sketch 23.2 → 51.5 dB, default-upscale-x4 44.4 → 46.3 dB.
    A last conv writing the RGB image (default-style's 7x7 32 → 3) adds 43.6 → 46.1 dB, and on 15 held-out photos
    min 39.9 → 40.8 dB. With 3 input or output channels they are also the convs int8 speeds up least; the last conv of
    a pixel-shuffle upscaler (48 channels) is full-size work and stays int8.
    """
    weights = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    kept = [convs[0].name]
    last = convs[-1]
    if len(convs) > 1 and last.input[1] in weights and weights[last.input[1]].dims[0] <= 4:
        kept.append(last.name)
    return kept


_CALIBRATION_GUARD = threading.Lock()


@contextlib.contextmanager
def _calibration_without_memory_pattern() -> Iterator[None]:
    """Make onnxruntime's calibration session run without a memory pattern, one calibration at a time.

    quantize_static builds that session itself (CalibraterBase.create_inference_session) and takes no session
    options, so the method is swapped for the duration. For RRDBNet (23 blocks, 64 features) at 64x64 the session
    grew by 2.06 GB with the pattern and 1.14 GB without (measured around MinMaxCalibrater.collect_data).
    """
    import onnxruntime
    from onnxruntime.quantization import calibrate

    def create_inference_session(self: Any) -> None:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # as onnxruntime does
        options.enable_mem_pattern = False
        self.infer_session = onnxruntime.InferenceSession(self.augmented_model_path, sess_options=options,
                                                          providers=self.execution_providers)

    with _CALIBRATION_GUARD:
        original = calibrate.CalibraterBase.create_inference_session
        calibrate.CalibraterBase.create_inference_session = create_inference_session
        try:
            yield
        finally:
            calibrate.CalibraterBase.create_inference_session = original


def _derive_int8(fp32_path: Path, path: Path, spec: ModelSpec) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_path))
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    batches, names = calibration_inputs(spec, split=n_params > _LARGE_MODEL_PARAMS)
    with tempfile.TemporaryDirectory(prefix="gan_onnx_q_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        rewritten = prelu_as_max(model)
        onnx.save(model, str(pre))
        # Symbolic shape inference cannot follow the dynamic H/W through every op (it raises "Incomplete symbolic
        # shape inference"); ONNX shape inference and the graph optimisation pass are enough for quantization.
        quant_pre_process(str(pre), str(pre), skip_symbolic_shape=True)
        kept_float = _image_convs(onnx.load(str(pre)))
        with warnings.catch_warnings(), _calibration_without_memory_pattern():
            warnings.simplefilter("ignore")
            quantize_static(
                str(pre),
                str(path),
                _Batches(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the VNNI (vpdpbusd) kernels
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv"],  # the FLOPs; keeping Add/Concat/Resize/norms float keeps quality
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=kept_float,
            )
    return {
        "format": "QDQ",
        "activations": "uint8 (asymmetric, per tensor)",
        "weights": "int8 (symmetric, per channel)",
        "ops": ["Conv"],
        "method": "MinMax",
        "prelu_as_max": rewritten,
        "float_convs": kept_float,
        "images": names,
        "batches": len(batches),
        "batch_shape": list(batches[0].shape),
    }


# --- checks -----------------------------------------------------------------------------------------------------


def _run_checker(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types, all mean "invalid model"
        raise OnnxExportError(f"{path.name}: onnx.checker rejected the model: {str(exc).splitlines()[0]}") from exc


def _parity(
    spec: ModelSpec, module: Any, path: Path, precision: str, *, device: str, reference: np.ndarray | None
) -> tuple[dict[str, Any], np.ndarray]:
    """Run the fixed image through the Translator's array path with the torch and the ONNX backend and compare."""
    from .onnxruntime_backend import OnnxBackend
    from .torch_backend import TorchBackend

    x, label = parity_input(spec)
    tile = requested_tile(spec.tile, spec.size_multiple) if spec.task == "upscale" else None
    if reference is None:
        reference = run_array(TorchBackend(module, device="cpu"), x, spec, tile=tile)
    backend = OnnxBackend(path, device=device, precision=precision, cache=False)
    out = run_array(backend, x, spec, tile=tile)
    lo, hi = spec.value_range
    max_abs = float(np.max(np.abs(out - reference)))
    psnr = psnr_db(out, reference, spec.value_range)
    record: dict[str, Any] = {
        "image": label,
        "input_shape": list(x.shape),
        "tile": tile,
        "reference": "torch fp32 (TorchBackend, cpu) through the same Translator",
        "device": backend.device,
        "max_abs_diff": max_abs,
        "psnr_vs_fp32_db": json_float(psnr),
    }
    if precision in FULL_PRECISION_GRAPHS:
        tol = FP32_TOLERANCE * (hi - lo)
        record.update(tolerance=tol, passed=bool(max_abs <= tol))
        if not record["passed"]:
            record["reason"] = f"max |onnx - torch| = {max_abs:.3g} > tolerance {tol:.3g}"
    else:
        record.update(min_psnr_db=MIN_PSNR_DB, passed=bool(psnr >= MIN_PSNR_DB))
        if not record["passed"]:
            record["reason"] = f"PSNR vs fp32 {psnr:.1f} dB < {MIN_PSNR_DB:.0f} dB"
    return record, reference


def _dynamic_check(spec: ModelSpec, module: Any, path: Path) -> dict[str, Any]:
    """Batch 2 at a non-square size the export never saw, against torch: proves N, H and W are really dynamic."""
    import torch

    from .onnxruntime_backend import OnnxBackend

    m = max(1, spec.size_multiple)
    h = max(m, -(-24 // m) * m)
    w = 2 * h if spec.task != "upscale" else h + 8
    x = np.random.default_rng(7).random((2, 3, h, w), dtype=np.float32)
    lo, hi = spec.value_range
    x = x * (hi - lo) + lo
    with torch.no_grad():
        ref = module(torch.from_numpy(x.copy())).numpy()  # a copy: some networks scale their input in place (RCAN)
    out = OnnxBackend(path, device="cpu", cache=False)(x)
    diff = float(np.max(np.abs(out - ref))) if out.shape == ref.shape else float("inf")
    return {"input_shape": list(x.shape), "output_shape": list(out.shape), "max_abs_diff": json_float(diff),
            "passed": bool(diff <= FP32_TOLERANCE * (hi - lo))}


# --- sidecars and the cache -------------------------------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path, fmt: str = FORMAT) -> dict[str, Any] | None:
    """The JSON object in `path` when it is one of ours (its "format" is `fmt`); None when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == fmt else None


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _sidecar_matches(data: dict[str, Any] | None, spec: ModelSpec, precision: str, state_sha: str) -> bool:
    return (
        data is not None
        and data.get("precision") == precision
        and data.get("recipe", 1) == RECIPES[precision]
        and data.get("spec") == spec_record(spec)
        and data.get("weights", {}).get("state_sha256") == state_sha
    )


def load_existing(root: Path, spec: ModelSpec, precision: str, state_sha: str) -> Exported | None:
    """The export of exactly these weights in `root`, passed or failed, if its files are intact; else None."""
    path = onnx_path_for(root, spec, precision)
    sidecar_path = path.with_suffix(".json")
    data = read_json(sidecar_path)
    if not _sidecar_matches(data, spec, precision, state_sha):
        return None
    assert data is not None
    if data.get("error"):
        # A remembered failure: retried when the weights or the exporting libraries change.
        return Exported(path, sidecar_path, data) if data.get("versions") == _versions() else None
    if not path.is_file() or sha256_file(path) != data.get("onnx_sha256"):
        return None
    return Exported(path, sidecar_path, data)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One export per model folder at a time: across threads (a lock) and processes (flock on .lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with lock, open(folder / ".lock", "a+") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: threads are still serialised
            pass
        yield


def _failure_sidecar(spec: ModelSpec, precision: str, weights: dict[str, Any], error: str, opset: int) -> dict:
    return {
        "format": FORMAT,
        "spec": spec_record(spec),
        "precision": precision,
        "recipe": RECIPES[precision],
        "opset": opset,
        "weights": weights,
        "error": error,
        "parity": {"passed": False, "reason": error},
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _export_one(
    spec: ModelSpec,
    module: Any,
    weights: dict[str, Any],
    root: Path,
    precision: str,
    *,
    opset: int,
    fp32: Exported | None,
    reference: dict[str, np.ndarray],
    export_module: Any | None = None,
) -> Exported:
    """Export one graph; `export_module` (default `module`) is what is exported, `module` what it is checked against."""
    path = onnx_path_for(root, spec, precision)
    sidecar_path = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="gan_onnx_", dir=path.parent) as tmp:
            tmp_path = Path(tmp) / path.name
            if precision in FULL_PRECISION_GRAPHS:
                _export_fp32(module if export_module is None else export_module, spec, tmp_path, opset)
            else:
                assert fp32 is not None and fp32.passed
                if precision == "fp16":
                    _derive_fp16(fp32.onnx_path, tmp_path)
                else:
                    extra["quantization"] = _derive_int8(fp32.onnx_path, tmp_path, spec)
            _run_checker(tmp_path)
            os.replace(tmp_path, path)
    except OnnxExportError as exc:
        data = _failure_sidecar(spec, precision, weights, str(exc), opset)
        write_json(sidecar_path, data)
        return Exported(path, sidecar_path, data)
    except Exception as exc:  # noqa: BLE001 - exporter/quantizer internals raise anything; keep it as a failure
        message = f"{spec.id} {precision}: export failed: {type(exc).__name__}: {first_line(exc)}"
        data = _failure_sidecar(spec, precision, weights, message, opset)
        write_json(sidecar_path, data)
        return Exported(path, sidecar_path, data)
    export_s = time.perf_counter() - t0
    parity, reference["out"] = _parity(spec, module, path, precision, device="cpu", reference=reference.get("out"))
    data: dict[str, Any] = {
        "format": FORMAT,
        "spec": spec_record(spec),
        "precision": precision,
        "recipe": RECIPES[precision],
        "opset": opset,
        "exporter": ("torch.onnx.export(dynamo=True)" + (" of the sub-pixel rewrite" if precision == SUBPIXEL else "")
                     if precision in FULL_PRECISION_GRAPHS else f"derived from {fp32.onnx_path.name}"),
        "eval_mode": True,
        "dynamic_axes": {"input": ["batch", "height", "width"], "output": ["batch", "height*scale", "width*scale"]},
        "onnx_file": path.name,
        "onnx_sha256": sha256_file(path),
        "onnx_bytes": path.stat().st_size,
        "weights": weights,
        "parity": parity,
        "export_seconds": round(export_s, 2),
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    if precision in FULL_PRECISION_GRAPHS:
        data["dynamic_check"] = _dynamic_check(spec, module, path)
        if not data["dynamic_check"]["passed"] and parity["passed"]:
            parity.update(passed=False, reason=f"batch-2 {data['dynamic_check']['input_shape']} run differs from torch")
    write_json(sidecar_path, data)
    return Exported(path, sidecar_path, data)


def prepare_module(module: Any) -> Any:
    """A private fp32 CPU copy in eval mode: the caller's module may be on CUDA, in half precision, or serving."""
    return copy.deepcopy(module).float().cpu().eval()


def export_model(
    spec: ModelSpec,
    root: str | Path,
    *,
    precisions: tuple[str, ...] = ("fp32",),
    module: Any | None = None,
    source: Any | None = None,
    opset: int = OPSET,
    force: bool = False,
    retry_failed: bool = False,
) -> list[Exported]:
    """Export `spec` in each precision into `root/<id>/`, reusing valid files unless `force`.

    A remembered failure of the same weights is returned as it is (no export every time a model loads) unless
    `retry_failed`.

    The weights come from `module` (as loaded) or, when None, from `gan_models.load_model(spec, allow_fallback=False)`.
    Reduced precisions are derived from the fp32 export, which is made (or reused) first. A failed export or
    parity check does not raise: it is returned (and written to the sidecar) with `passed` False.

    Raises:
        GanModelsError / BackendUnavailableError: unknown or unsupported precision.
        WeightsUnavailableError, WeightsError: the spec's weights cannot be loaded.
    """
    for p in precisions:
        if p != SUBPIXEL:  # a graph for OpenVINO, not a precision users pick
            check_precision(p)
    if module is None:
        from ..weights import load_model

        loaded = load_model(spec, allow_fallback=False)
        module, source = loaded.module, loaded.source
    root = Path(root)
    module = prepare_module(module)
    weights = weights_record(source, module)
    results: list[Exported] = []
    reference: dict[str, np.ndarray] = {}  # the torch output on the parity image, computed once
    with _folder_lock(model_dir(root, spec)):
        fp32 = None if force else load_existing(root, spec, "fp32", weights["state_sha256"])
        if fp32 is None or (retry_failed and not fp32.passed):
            fp32 = _export_one(spec, module, weights, root, "fp32", opset=opset, fp32=None, reference=reference)
        for precision in precisions:
            if precision == "fp32":
                results.append(fp32)
                continue
            if precision == SUBPIXEL:
                done = None if force else load_existing(root, spec, SUBPIXEL, weights["state_sha256"])
                if done is None or (retry_failed and not done.passed):
                    rewritten = copy.deepcopy(module)
                    subpixel_deconvs(rewritten)
                    done = _export_one(spec, module, weights, root, SUBPIXEL, opset=opset, fp32=None,
                                       reference=reference, export_module=rewritten)
                results.append(done)
                continue
            done = None if force else load_existing(root, spec, precision, weights["state_sha256"])
            if done is None or (retry_failed and not done.passed):
                if not fp32.passed:
                    data = _failure_sidecar(spec, precision, weights, f"fp32 export unusable: {fp32.failure}", opset)
                    path = onnx_path_for(root, spec, precision)
                    write_json(path.with_suffix(".json"), data)
                    done = Exported(path, path.with_suffix(".json"), data)
                else:
                    done = _export_one(spec, module, weights, root, precision, opset=opset, fp32=fp32,
                                       reference=reference)
            results.append(done)
    return results

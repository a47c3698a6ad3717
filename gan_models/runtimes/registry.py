"""RUNTIMES: every way this library can run a network, written out by hand, with the precisions each offers here.

A runtime builds its backend from `Artifacts`: the loaded network (fp32, CPU) and the graphs exported from it, made
on first ask and cached on disk. Every candidate of one model is built from that same module or exported graph, so
the tournament compares runtimes, not exports. Adding a runtime is one entry in RUNTIMES. What a runtime offers
depends on the device and the CPU (bf16 needs avx512_bf16 or amx_bf16); which one is fastest is never assumed here:
the tournament measures it on the machine that runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gan_models.runtimes.cpu as cpu  # the module, not the package: no import cycle through __init__

from ..errors import BackendUnavailableError, GanModelsError, OnnxExportError
from ..specs import ModelSpec
from .base import Backend
from .onnx_export import (
    FULL_PRECISION_GRAPHS,
    SUBPIXEL,
    Exported,
    export_model,
    has_subpixel_deconvs,
    subpixel_weight_count,
)
from .onnxruntime_backend import OnnxBackend, import_onnxruntime
from .openvino_backend import OpenVinoBackend, import_openvino
from .torch_backend import TorchBackend
from .torch_bf16 import TorchBf16Backend


@dataclass
class Artifacts:
    """What a runtime builds from: one loaded network and its exports, made once per precision and remembered.

    Parameters:
        spec: the model.
        module: the network, fp32 on the CPU (a private copy: runtimes may convert it).
        source: where its weights came from (recorded in sidecars); None for in-memory (random-init) weights.
        root: the export cache folder.
    """

    spec: ModelSpec
    module: Any
    source: Any | None
    root: Path
    _exports: dict[str, Exported] = field(default_factory=dict, repr=False)

    def export(self, precision: str) -> Exported:
        """The ONNX export of `precision` (made or reused from the cache), passed or not."""
        if precision not in self._exports:
            (self._exports[precision],) = export_model(self.spec, self.root, precisions=(precision,),
                                                       module=self.module, source=self.source)
        return self._exports[precision]

    def onnx(self, precision: str) -> Path:
        """The exported graph of `precision` for a runtime to load.

        A reduced precision that misses the PSNR bar on the parity image is still handed out: the tournament judges
        every runtime on it with its own held-out images. An fp32 graph that differs from torch is not.

        Raises:
            OnnxExportError: the export failed, or the fp32 graph does not match torch.
        """
        done = self.export(precision)
        if done.sidecar.get("error") or (precision in FULL_PRECISION_GRAPHS and not done.passed):
            raise OnnxExportError(done.failure)
        return done.onnx_path


Make = Callable[..., Backend]  # make(artifacts, *, precision, device, threads) -> Backend


@dataclass(frozen=True)
class Runtime:
    """One way to run a network.

    Parameters:
        name: the registry key, also `Backend.name` of what `make` returns.
        offers: every precision this runtime can run anywhere.
        available: whether its package can be imported in this process.
        precisions: device ("cpu" or "cuda") → the precisions worth offering there (a subset of `offers`; empty
            when the device cannot run it at all). Called only when `available()`.
        make: builds a backend; raises OnnxExportError when its graph cannot be made, BackendUnavailableError when
            the runtime cannot load it.
        install: how to get it, for the message when it is missing.
        applies: (module, precision) → None, or why that candidate makes no sense for this network.
        graphs: precision → the exported graphs `make` reads (made before any candidate is built: exporting a
            large network briefly holds several copies of it).
    """

    name: str
    offers: tuple[str, ...]
    available: Callable[[], bool]
    precisions: Callable[[str], tuple[str, ...]]
    make: Make
    install: str
    applies: Callable[[Any, str], str | None] = lambda module, precision: None
    graphs: Callable[[str], tuple[str, ...]] = lambda precision: ()

    def not_applicable(self, module: Any, precision: str) -> str | None:
        """Why `precision` makes no sense for this network (a graph rewrite it has nothing for), else None."""
        return self.applies(module, precision)

    def require(self) -> None:
        if not self.available():
            raise BackendUnavailableError(
                f"the {self.name} backend is not installed ({self.install}); use backend 'torch' or 'auto'")


def _importable(load: Callable[[], Any]) -> Callable[[], bool]:
    """available() of a runtime whose package `load` imports (raising BackendUnavailableError when missing)."""

    def available() -> bool:
        try:
            load()
        except BackendUnavailableError:
            return False
        return True

    return available


def _torch_precisions(device: str) -> tuple[str, ...]:
    if device == "cuda":
        return ("fp32", "fp16")
    return ("fp32", "bf16") if cpu.has_bf16() else ("fp32",)  # fp16 on CPU: slower and lossy


def _make_torch(artifacts: Artifacts, *, precision: str, device: str, threads: int | None) -> Backend:
    # A private copy: the backends move and convert their module in place, and others read artifacts.module.
    # `threads` is not passed on: torch's thread count is process-wide, set once by the entry point.
    del threads
    if precision == "bf16":
        return TorchBf16Backend(copy.deepcopy(artifacts.module))
    return TorchBackend(copy.deepcopy(artifacts.module), device=device, half=precision == "fp16")


def _onnxruntime_precisions(device: str) -> tuple[str, ...]:
    if device == "cuda":
        has_cuda = "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
        return ("fp32", "fp16") if has_cuda else ()
    return ("fp32", "int8")  # fp16 on CPU is slower than fp32 (0.74-0.98x measured); int8 needs a CPU


def _make_onnxruntime(artifacts: Artifacts, *, precision: str, device: str, threads: int | None) -> Backend:
    # A private session: the backend lives as long as the Translator that runs it, not in the process-wide cache.
    return OnnxBackend(artifacts.onnx(precision), device=device, threads=threads, precision=precision, cache=False)


def _openvino_precisions(device: str) -> tuple[str, ...]:
    if device != "cpu":
        return ()  # OpenVINO's GPU plugin is for Intel GPUs; CUDA devices go to torch and onnxruntime
    return ("fp32", "bf16", BF16_SUBPIXEL, "int8") if cpu.has_bf16() else ("fp32", "int8")


# bf16 on the sub-pixel graph (gan_models.runtimes.onnx_export.SUBPIXEL): OpenVINO runs some transposed convs in f32
# at bf16 precision (seen with biased ones); as convs they run in bf16 but cost 2.25x the multiply-adds. Which is
# faster depends on the network, so both compete.
BF16_SUBPIXEL = "bf16-subpixel"


# Exporting a network briefly holds several copies of it: the sub-pixel graph of a large U-Net (huggan's: 54M weights,
# 98M rewritten) peaked at 3.5 GB, over what a background preparation may use.
SUBPIXEL_MAX_WEIGHTS = 32_000_000


def _openvino_applies(module: Any, precision: str) -> str | None:
    if precision != BF16_SUBPIXEL:
        return None
    if not has_subpixel_deconvs(module):
        return "the network has no ConvTranspose(k=4, s=2, p=1) to write as sub-pixel convs"
    weights = subpixel_weight_count(module)
    if weights > SUBPIXEL_MAX_WEIGHTS:
        return (f"its sub-pixel graph would hold {weights / 1e6:.0f}M weights; exporting it would need more memory "
                f"than a background preparation may use (up to {SUBPIXEL_MAX_WEIGHTS / 1e6:.0f}M)")
    return None


def _make_openvino(artifacts: Artifacts, *, precision: str, device: str, threads: int | None) -> Backend:
    # bf16 is an fp32 graph compiled with a bf16 inference precision; int8 is the QDQ graph onnxruntime runs too.
    if precision == BF16_SUBPIXEL:
        return OpenVinoBackend(artifacts.onnx(SUBPIXEL), device=device, precision="bf16", threads=threads, cache=False)
    graph = artifacts.onnx("int8" if precision == "int8" else "fp32")
    return OpenVinoBackend(graph, device=device, precision=precision, threads=threads, cache=False)


RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime(name="torch", offers=("fp32", "fp16", "bf16"), available=lambda: True,
                     precisions=_torch_precisions, make=_make_torch, install="pip install torch"),
    "onnxruntime": Runtime(name="onnxruntime", offers=("fp32", "fp16", "int8"),
                           available=_importable(import_onnxruntime), precisions=_onnxruntime_precisions,
                           make=_make_onnxruntime, graphs=lambda precision: (precision,),
                           install="pip install onnxruntime, or onnxruntime-gpu for CUDA"),
    "openvino": Runtime(name="openvino", offers=("fp32", "bf16", BF16_SUBPIXEL, "int8"),
                        available=_importable(import_openvino), precisions=_openvino_precisions,
                        make=_make_openvino, install="pip install openvino", applies=_openvino_applies,
                        graphs=lambda precision: {"int8": ("int8",), BF16_SUBPIXEL: (SUBPIXEL,)}.get(precision,
                                                                                                   ("fp32",))),
}
# Names a caller may pass as `backend`: "auto" (the tournament's choice), a runtime, or an older alias.
ALIASES: dict[str, str] = {"onnx": "onnxruntime"}
BACKENDS: tuple[str, ...] = ("auto", *RUNTIMES, *ALIASES)


def get_runtime(name: str) -> Runtime:
    """The runtime called `name` (or an alias of it), else an error naming the valid choices."""
    runtime = RUNTIMES.get(ALIASES.get(name, name))
    if runtime is None:
        raise GanModelsError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return runtime

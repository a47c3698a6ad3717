"""A memory budget per request, checked before work starts.

    plan = budget.check_request(spec, h, w, tile="auto", outscale=4, budget_mb=4096, module=network)
    translator(image, tile=plan.tile, ...)          # a tile that fits, or OverBudgetError before any work

The network's activations are counted once per network on the meta device (no memory, no time): a forward pass on a
probe input under a dispatch mode that adds up the bytes of every tensor an operator makes and subtracts them when it
is freed, so the peak of tensors alive at once is exact for the network's own graph (skip connections, U-Net
encoder features, dense blocks). Activations grow with the pixels a run sees; the host buffers of a request (input,
the float32 output canvas and its blend weights, the image made from it) grow with the input and output pixels.
Both were calibrated against the measured RSS of runs on this CPU (bench/abuse.py, `python -m gan_models.budget`
prints estimate vs measurement) and include a margin for the allocator and the convolution kernels' workspace.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import GanModelsError, UnsupportedModelError
from .limits import MAX_LAYERS
from .specs import ModelSpec
from .tiling import auto_tile

logger = logging.getLogger(__name__)

# Measured RSS / counted peak on this CPU (oneDNN convolution workspaces, allocator slack): up to 1.7 (RRDBNet, U-Net).
ACTIVATION_FACTOR = 1.75
# Host bytes per output pixel of a request: float32 canvas (12) + blend weights (4) + the (H, W, 3) float32 image
# made from it (12) + the 8/16-bit result; measured 26 B on a 64 MP output (2048² at x4, 256 tiles).
HOST_BYTES_PER_OUTPUT_PIXEL = 32
HOST_BYTES_PER_INPUT_PIXEL = 40  # decoded image, float32 tensor, its padded copy
FIXED_BYTES = 32 * 2**20  # per request: PIL, numpy and torch bookkeeping
# Background preparation: the torch copy, the exported graphs, onnxruntime's sessions and arenas, an int8 copy and
# its calibration, two candidates alive at once (tournament.FINALISTS). docs/speed.md: huggan's U-Net (54M weights,
# 256²) peaked at 2.87 GB, RRDBNet's calibration alone grows to about 2 GB; this estimates 1.9 and 2.2 GB for them.
PREPARE_WEIGHT_COPIES = 8
PREPARE_ACTIVATION_COPIES = 4
MIN_TILE = 64
_PROBE_SIDE = 64
FALLBACK_MAPS = 8  # feature maps assumed alive at once for a network the meta device cannot run
_PROFILES_KEPT = 256


class OverBudgetError(GanModelsError):
    """A request (or a background preparation) whose estimated peak memory is over the budget; the message gives
    the estimate, the budget and what to change."""


@dataclass(frozen=True)
class Profile:
    """What memory a network needs: its weights, and its activations per pixel it sees at once.

    Parameters:
        weight_bytes: parameters and buffers.
        activation_bytes_per_pixel: peak bytes of live activations per input pixel (counted on the meta device at
            `probe_side`, times ACTIVATION_FACTOR).
        probe_side: the square input it was counted on.
        layers: leaf modules.
    """

    weight_bytes: int
    activation_bytes_per_pixel: float
    probe_side: int
    layers: int


@dataclass(frozen=True)
class Plan:
    """What a request will run: `tile` for Translator(tile=...) (None: the whole image; "auto": the translator's own
    choice, which fits) and its estimated peak."""

    tile: int | None | Literal["auto"]
    estimate_bytes: int


class _LiveBytes:
    """A TorchDispatchMode (made lazily: importing torch is not free) counting bytes of live tensors it created."""

    def __new__(cls) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        class Counter(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.live = 0
                self.peak = 0
                self._lock = threading.Lock()

            def _free(self, nbytes: int) -> None:
                with self._lock:
                    self.live -= nbytes

            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                inputs = {id(t) for t in tree_flatten((args, kwargs))[0]}
                for t in tree_flatten(out)[0]:
                    if not hasattr(t, "untyped_storage") or id(t) in inputs or t._is_view():
                        continue  # in-place results and views own no new memory
                    nbytes = t.numel() * t.element_size()
                    with self._lock:
                        self.live += nbytes
                        self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._free, nbytes)
                return out

        return Counter()


_profiles: OrderedDict[str, Profile] = OrderedDict()  # by spec id, most recently used last
_profiles_lock = threading.Lock()


def probe_side(spec: ModelSpec) -> int:
    """The side of the meta probe: the training size for U-Nets (they need it), else 64 rounded to the multiple."""
    m = max(1, spec.size_multiple)
    side = spec.input_size or _PROBE_SIDE
    return -(-max(side, m) // m) * m


def known_profile(spec: ModelSpec) -> Profile | None:
    """The profile counted for `spec` before (by `profile`), if it is still remembered."""
    with _profiles_lock:
        known = _profiles.get(spec.id)
        if known is not None:
            _profiles.move_to_end(spec.id)
        return known


def profile(module: Any, spec: ModelSpec) -> Profile:
    """The memory profile of `spec`'s network `module` (counted once per spec id, then remembered: the request
    path finds it even after the model has moved to another runtime).

    Raises:
        UnsupportedModelError: more leaf layers than limits.MAX_LAYERS.
    """
    known = known_profile(spec)
    if known is not None:
        return known
    layers = sum(1 for m in module.modules() if not any(True for _ in m.children()))
    if layers > MAX_LAYERS:
        raise UnsupportedModelError(f"{spec.title}: {layers} layers, over this server's limit of {MAX_LAYERS}")
    import torch

    weights = [*module.parameters(), *module.buffers()]
    weight_bytes = sum(t.numel() * t.element_size() for t in weights)
    side = probe_side(spec)
    try:
        peak = _meta_peak(module, side)
    except Exception as exc:  # noqa: BLE001 - an op without a meta kernel: a conservative count instead
        widest = max((m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)), default=64)
        peak = FALLBACK_MAPS * widest * 4 * side * side * max(1, spec.scale) ** 2
        logger.warning("%s: cannot count its activations on the meta device (%s); assuming %d feature maps of "
                       "%d channels at the output resolution", spec.title, type(exc).__name__, FALLBACK_MAPS, widest)
    result = Profile(weight_bytes=weight_bytes,
                     activation_bytes_per_pixel=peak * ACTIVATION_FACTOR / (side * side),
                     probe_side=side, layers=layers)
    with _profiles_lock:
        _profiles[spec.id] = result
        while len(_profiles) > _PROFILES_KEPT:
            _profiles.popitem(last=False)
    return result


def _meta_peak(module: Any, side: int) -> int:
    """Peak bytes of live activations of `module` on a (1, C, side, side) input, counted on a meta copy of it (the
    copy shares no tensor with the module, which may be serving requests meanwhile)."""
    import copy

    import torch

    memo: dict[int, Any] = {}
    for t in [*module.parameters(), *module.buffers()]:
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = torch.nn.Parameter(meta, requires_grad=False) if isinstance(t, torch.nn.Parameter) else meta
    skeleton = copy.deepcopy(module, memo)
    x = torch.empty((1, _in_channels(module), side, side), device="meta")
    counter = _LiveBytes()
    with torch.no_grad(), counter:
        y = skeleton(x)
        del y
    return int(counter.peak)


def _in_channels(module: Any) -> int:
    import torch

    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            return int(m.in_channels if isinstance(m, torch.nn.Conv2d) else m.in_features)
    return 3


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def run_bytes(prof: Profile, spec: ModelSpec, h: int, w: int, tile: int | None, outscale: float) -> int:
    """Estimated peak bytes of one request on an h x w input (weights excluded: they are loaded already)."""
    m = max(1, spec.size_multiple)
    if tile is None:
        seen = _round_up(max(h, 32), m) * _round_up(max(w, 32), m)
    else:
        seen = tile * tile
    out_pixels = h * w * max(spec.scale, outscale) ** 2
    return int(seen * prof.activation_bytes_per_pixel + out_pixels * HOST_BYTES_PER_OUTPUT_PIXEL
               + h * w * HOST_BYTES_PER_INPUT_PIXEL + FIXED_BYTES)


def check_request(
    spec: ModelSpec, h: int, w: int, *, tile: int | None | Literal["auto"], outscale: float | None, budget_mb: int,
    module: Any = None, auto_budget_mb: int | None = None,
) -> Plan:
    """The tile to run an h x w input with so that the request's estimated peak stays within `budget_mb`.

    `tile` is what was asked ("auto", None for the whole image, or a size); a smaller tile is chosen when the asked
    one would not fit (tiling changes nothing in the result beyond blending), the whole image when it fits and
    "auto" was asked. Networks that must see the whole image (spec.tile is None: InstanceNorm) are never tiled.

    `module` (the network on torch) is profiled when `spec` has not been (see `profile`). `auto_budget_mb`: the
    translator's own tile budget (Settings.tile_budget_mb), so that "auto" never gets a larger tile than it would pick.

    Raises:
        OverBudgetError: even the smallest tile would not fit (the output alone is too large), or a network that
            must see the whole image does not fit; the message gives the estimate, the budget and what to change.
        GanModelsError: no profile of `spec` and no module to count one from.
    """
    prof = known_profile(spec)
    if prof is None:
        if module is None:
            raise GanModelsError(f"{spec.title}: its memory was never sized; load it again")
        prof = profile(module, spec)
    budget = budget_mb * 2**20
    scale = float(spec.scale if outscale is None else outscale)
    where = f"a {w}x{h} input" + (f" at x{scale:g}" if scale != 1 else "")

    def refuse(needed: int, what: str) -> OverBudgetError:
        return OverBudgetError(f"{where} needs about {needed / 2**20:,.0f} MB ({what}), over this server's "
                               f"{budget_mb:,} MB per request (GAN_STUDIO_REQUEST_MEMORY_MB); use a smaller image"
                               + (" or a lower output scale" if scale > 1 else ""))

    whole = run_bytes(prof, spec, h, w, None, scale)
    if spec.tile is None or (tile in (None, "auto") and whole <= budget):
        if whole > budget:
            raise refuse(whole, "this network sees the whole image at once")
        return Plan(tile if spec.tile is not None else None, whole)  # "auto" tiles by its own, smaller, budget
    m = max(1, spec.size_multiple)
    smallest = _round_up(MIN_TILE, m)
    if tile == "auto":
        own = None if auto_budget_mb is None else auto_tile(h, w, scale=spec.scale, budget_bytes=auto_budget_mb * 2**20,
                                                             multiple=m)
        asked: Any = min(own or max(h, w), spec.tile * 4)
    else:
        asked = max(h, w) if tile is None else tile
    fixed = run_bytes(prof, spec, h, w, 0, scale)
    room = budget - fixed
    if room < smallest * smallest * prof.activation_bytes_per_pixel:
        raise refuse(fixed + int(smallest * smallest * prof.activation_bytes_per_pixel), "the result alone")
    fits = int(math.sqrt(room / prof.activation_bytes_per_pixel)) // m * m
    chosen = max(smallest, min(_round_up(int(asked), m), fits))
    return Plan(chosen, run_bytes(prof, spec, h, w, chosen, scale))


def prepare_bytes(module: Any, spec: ModelSpec, side: int) -> int:
    """Estimated peak bytes of preparing a network in the background (export, calibration, timing) on side x side
    inputs: PREPARE_WEIGHT_COPIES copies of its weights and PREPARE_ACTIVATION_COPIES of its activations."""
    prof = profile(module, spec)
    return int(prof.weight_bytes * PREPARE_WEIGHT_COPIES
               + side * side * prof.activation_bytes_per_pixel * PREPARE_ACTIVATION_COPIES + FIXED_BYTES)


def free_bytes() -> int:
    """Memory available to this process now (psutil: what the kernel could give without swapping)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_preparation(module: Any, spec: ModelSpec, side: int, *, free: Callable[[], int] = free_bytes) -> None:
    """Refuse a background preparation whose estimate exceeds what is free now (half of it: requests come first).

    Raises:
        OverBudgetError: the estimate and what was free, in one line.
    """
    needed, available = prepare_bytes(module, spec, side), free()
    if needed > available // 2:
        raise OverBudgetError(f"preparing {spec.title} needs about {needed / 2**20:,.0f} MB, more than half of the "
                              f"{available / 2**20:,.0f} MB free now; it stays on torch")


__all__ = ["OverBudgetError", "Plan", "Profile", "check_preparation", "check_request", "prepare_bytes", "profile",
           "run_bytes"]

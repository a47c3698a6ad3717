"""A state dict in, what network it holds out: family, constructor numbers, value range, scale, size rules.

Detection reads only keys and shapes. For each family we know, the numbers are read off the tensors (e.g. a
ResnetGenerator's ngf from `model.1.weight`, its block count from the `conv_block` indices), the network is built
on the meta device (no memory, no weights) and its keys and shapes are compared with the file's: a detection is a
network that will load strictly. What none of our families fits goes to spandrel (SR architectures we have no
file for); what spandrel does not know either is refused in one line that says what the file holds.

Families (ARCHS name: publisher layout):
  resnet_generator  junyanz CycleGAN ResnetGenerator, instance or batch norm, with or without dropout
                    (`model.1`, `model.N.conv_block.{1,5}` or `{1,6}`); UPIT's the same without `model.`
  unet_generator    junyanz pix2pix UnetGenerator, batch or instance norm (`model.model.0`, `model.model.1.model.1`)
  huggan_unet       huggan pix2pix GeneratorUNet (`down1..8`, `up1..7`, `final.2`)
  srresnet          SRGAN generator, Lornatang/SRGAN-PyTorch layout (`conv1.0`, `trunk.N.rcb`, `upsampling.K`)
  rrdbnet           ESRGAN / Real-ESRGAN RRDBNet, basicsr layout (`conv_first`, `body.N.rdb1`, `conv_up1`)
  srvgg_compact     Real-ESRGAN compact SRVGGNet (`body.0` .. `body.2n+2`)
  rrdbnet_esrgan    the same RRDBNet in the original ESRGAN layout (`model.0`, `model.1.sub.N.RDB1.conv1.0`),
                    keys renamed on load (archs.STATE_BUILT_ARCHS)
  spandrel          anything else spandrel detects: SPAN, SwinIR, HAT, DAT, OmniSR, other ESRGAN variants, ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .archs import build_arch
from .archs.rrdbnet import esrgan_to_basicsr, rrdbnet_kwargs
from .archs.spandrel_models import describe_spandrel, fuse_reparametrised
from .errors import UnrecognisedNetworkError, UnsupportedModelError
from .modelspec import Task
from .state_dict import (  # describe_keys and unwrap_state_dict: re-exported for older imports from here
    canonicalize_state_dict,
    compare_keys,
    describe_keys,
    top_level_groups,
    unwrap_state_dict,
)

SUPPORTED_FAMILIES = (
    "CycleGAN ResnetGenerator (junyanz, UPIT)",
    "Pix2Pix UnetGenerator (junyanz, batch or instance norm)",
    "Pix2Pix GeneratorUNet (huggan)",
    "SRResNet/SRGAN (Lornatang SRGAN-PyTorch)",
    "RRDBNet ESRGAN/Real-ESRGAN (basicsr and old ESRGAN layouts)",
    "SRVGG compact (Real-ESRGAN)",
    "SR/restoration networks spandrel detects (SPAN, SwinIR, HAT, DAT, OmniSR, ...)",
)
_TILE_SR = 192
_TILE_DISCOURAGED = 256
# The 1x rule: the task follows the family, not the scale. Every super-resolution/restoration network (ours:
# SRResNet, RRDBNet, SRVGG; everything spandrel builds) is an "upscale" model at any scale, 1x included (denoise,
# deblur, JPEG clean-up: NAFNet, SCUNet, 1x ESRGAN); the upscale tab restores at 1x. "style" is for [-1, 1]
# image-to-image translators (CycleGAN). `?task=` overrides it.
SR_TASK: Task = "upscale"
DOCS = "docs/custom-models.md"


@dataclass(frozen=True)
class Detection:
    """What a checkpoint (or one network inside it) is, with the numbers a ModelSpec needs.

    Parameters:
        family: human name of the architecture family, e.g. "CycleGAN ResnetGenerator (junyanz)".
        arch: key of `archs.ARCHS`, or of `archs.STATE_BUILT_ARCHS` ("spandrel") for networks built from the file.
        arch_kwargs: constructor arguments read from the shapes (for "spandrel": the detected architecture's
            name and spandrel's tags, for information only).
        task, value_range, scale, size_multiple, tile, input_size: as on ModelSpec, from the family.
        key_prefix: the network's prefix in a file holding several (e.g. "G_B."), else None.
        summary: one line for users, e.g. "ResnetGenerator ngf=64 n_blocks=9 (instance norm)".
    """

    family: str
    arch: str
    arch_kwargs: Mapping[str, Any]
    task: Task
    value_range: tuple[float, float]
    scale: int
    size_multiple: int
    tile: int | None
    summary: str
    input_size: int | None = None
    key_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch_kwargs", MappingProxyType(dict(self.arch_kwargs)))

    def spec_fields(self) -> dict[str, Any]:
        """The ModelSpec fields this detection fixes."""
        return {
            "task": self.task, "arch": self.arch, "arch_kwargs": dict(self.arch_kwargs),
            "value_range": self.value_range, "scale": self.scale, "size_multiple": self.size_multiple,
            "tile": self.tile, "input_size": self.input_size, "key_prefix": self.key_prefix,
        }


# --- our families: numbers from shapes ------------------------------------------------------------------------------

def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _resnet_generator(sd: dict[str, torch.Tensor]) -> tuple[dict, str] | None:
    if "model.1.weight" not in sd and "1.weight" in sd:  # UPIT: the Sequential is the network (`G_B.1.weight`)
        sd = {f"model.{k}": v for k, v in sd.items()}
    blocks = _indices(sd, r"model\.(\d+)\.conv_block\.1\.weight$")
    first = sd.get("model.1.weight")
    if first is None or first.ndim != 4 or first.shape[-1] != 7 or not blocks:
        return None
    last = max(_indices(sd, r"model\.(\d+)\.weight$"))
    kwargs = {"in_channels": first.shape[1], "out_channels": sd[f"model.{last}.weight"].shape[0],
              "ngf": first.shape[0], "n_blocks": len(blocks)}
    # BatchNorm leaves affine weights after the first conv (InstanceNorm none); a Dropout moves the second conv of
    # each block from conv_block.5 to conv_block.6. Only the non-defaults are named, as the curated specs do.
    norm = "batch" if getattr(sd.get("model.2.weight"), "ndim", 0) == 1 else "instance"
    dropout = getattr(sd.get(f"model.{blocks[0]}.conv_block.6.weight"), "ndim", 0) == 4  # (batch norm's is 1-D)
    kwargs |= ({"norm": norm} if norm != "instance" else {}) | ({"dropout": True} if dropout else {})
    summary = f"ResnetGenerator ngf={kwargs['ngf']} n_blocks={kwargs['n_blocks']} ({norm} norm"
    return kwargs, summary + (", dropout)" if dropout else ")")


def _unet_generator(sd: dict[str, torch.Tensor]) -> tuple[dict, str] | None:
    first = sd.get("model.model.0.weight")
    up = sd.get("model.model.3.weight")
    if first is None or up is None or first.ndim != 4:
        return None
    depth = max(k.split(".").count("model") for k in sd if k.endswith(".weight")) - 1
    # BatchNorm layers carry 1-D affine weights; the InstanceNorm variant has no norm parameters at all.
    norm = "batch" if any(v.ndim == 1 and k.endswith(".weight") for k, v in sd.items()) else "instance"
    kwargs = {"in_channels": first.shape[1], "out_channels": up.shape[1], "num_downs": depth,
              "ngf": first.shape[0], "norm": norm}
    return kwargs, f"UnetGenerator num_downs={depth} ngf={kwargs['ngf']} ({norm} norm)"


def _huggan_unet(sd: dict[str, torch.Tensor]) -> tuple[dict, str] | None:
    if "down1.model.0.weight" not in sd or "final.2.weight" not in sd:
        return None
    kwargs = {"in_channels": sd["down1.model.0.weight"].shape[1], "out_channels": sd["final.2.weight"].shape[0]}
    return kwargs, "GeneratorUNet (huggan pix2pix, 8 levels)"


def _srresnet(sd: dict[str, torch.Tensor]) -> tuple[dict, str] | None:
    head = sd.get("conv1.0.weight")
    blocks = _indices(sd, r"trunk\.(\d+)\.rcb\.0\.weight$")
    ups = _indices(sd, r"upsampling\.(\d+)\.upsample_block\.0\.weight$")
    if head is None or not ups or "conv3.weight" not in sd:
        return None
    channels = head.shape[0]
    upscale = 1
    for i in ups:
        upscale *= round((sd[f"upsampling.{i}.upsample_block.0.weight"].shape[0] / channels) ** 0.5)
    kwargs = {"in_channels": head.shape[1], "out_channels": sd["conv3.weight"].shape[0], "channels": channels,
              "num_rcb": len(blocks), "upscale": upscale}
    return kwargs, f"SRResNet x{upscale} channels={channels} blocks={len(blocks)}"


def _rrdbnet(sd: dict[str, torch.Tensor]) -> tuple[dict, str] | None:
    kwargs = rrdbnet_kwargs(sd)
    if kwargs is None:
        return None
    return kwargs, f"RRDBNet x{kwargs['scale']} blocks={kwargs['num_block']} features={kwargs['num_feat']}"


def _srvgg_compact(sd: dict[str, torch.Tensor]) -> tuple[dict, str] | None:
    convs = _indices(sd, r"body\.(\d+)\.weight$")
    if not convs or convs[0] != 0 or any(k.startswith("body.0.rdb") for k in sd) or "conv_first.weight" in sd:
        return None
    first, last = sd["body.0.weight"], sd[f"body.{convs[-1]}.weight"]
    if first.ndim != 4 or last.ndim != 4:
        return None
    prelu = "body.1.weight" in sd
    upscale = round((last.shape[0] / first.shape[1]) ** 0.5)
    kwargs = {"num_in_ch": first.shape[1], "num_out_ch": first.shape[1], "num_feat": first.shape[0],
              "num_conv": (convs[-1] - 2) // 2, "upscale": upscale,
              # The activation of a relu/leakyrelu net leaves no tensor; published compact nets all use prelu.
              "act_type": "prelu" if prelu else "relu"}
    return kwargs, f"SRVGGNetCompact x{upscale} convs={kwargs['num_conv']} features={kwargs['num_feat']}"


@dataclass(frozen=True)
class _Family:
    """A family of ours: `guess` reads the numbers, ARCHS[arch] checks them; `spec_arch` is what specs name (a
    STATE_BUILT_ARCHS entry when the file's keys must be renamed first, by `rename`)."""

    name: str
    arch: str
    guess: Callable[[dict[str, torch.Tensor]], tuple[dict, str] | None]
    task: Task
    value_range: tuple[float, float]
    spec_arch: str = ""
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


FAMILIES: tuple[_Family, ...] = (
    _Family(SUPPORTED_FAMILIES[0], "resnet_generator", _resnet_generator, "style", (-1.0, 1.0)),
    _Family(SUPPORTED_FAMILIES[1], "unet_generator", _unet_generator, "sketch2photo", (-1.0, 1.0)),
    _Family(SUPPORTED_FAMILIES[2], "huggan_unet", _huggan_unet, "sketch2photo", (-1.0, 1.0)),
    _Family(SUPPORTED_FAMILIES[3], "srresnet", _srresnet, SR_TASK, (0.0, 1.0)),
    _Family(SUPPORTED_FAMILIES[4], "rrdbnet", _rrdbnet, SR_TASK, (0.0, 1.0)),
    # The original ESRGAN code's `model.N` keys, renamed onto our RRDBNet (one implementation, ONNX-checked).
    _Family(SUPPORTED_FAMILIES[4], "rrdbnet", _rrdbnet, SR_TASK, (0.0, 1.0), spec_arch="rrdbnet_esrgan",
            rename=esrgan_to_basicsr),
    _Family(SUPPORTED_FAMILIES[5], "srvgg_compact", _srvgg_compact, SR_TASK, (0.0, 1.0)),
)


def _size_rules(arch: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """scale, size_multiple, tile and input_size of a detected network of ours."""
    if arch == "resnet_generator":  # InstanceNorm: statistics change per tile, so the whole image is seen
        return {"scale": 1, "size_multiple": 4, "tile": None, "input_size": None}
    if arch == "unet_generator":
        side = 2 ** kwargs["num_downs"]
        return {"scale": 1, "size_multiple": side, "tile": None, "input_size": side}
    if arch == "huggan_unet":
        return {"scale": 1, "size_multiple": 256, "tile": None, "input_size": 256}
    scale = kwargs.get("scale", kwargs.get("upscale", 1))
    multiple = {1: 4, 2: 2}.get(scale, 1) if arch == "rrdbnet" else 1
    return {"scale": scale, "size_multiple": multiple, "tile": _TILE_SR, "input_size": None}


def _mismatch(arch: str, kwargs: Mapping[str, Any], sd: dict[str, torch.Tensor]) -> str | None:
    """None when `sd` loads strictly into ARCHS[arch](**kwargs), else what differs (built on the meta device)."""
    try:
        with torch.device("meta"):
            model: nn.Module = build_arch(arch, **dict(kwargs))
    except (TypeError, ValueError) as exc:
        return str(exc)
    return compare_keys(canonicalize_state_dict(sd, model=model), model.state_dict()).brief() or None


def _detect_ours(sd: dict[str, torch.Tensor]) -> tuple[Detection | None, str | None]:
    """(detection, None), or (None, why the family that looked right does not fit), or (None, None)."""
    near_miss = None
    for family in FAMILIES:
        state = family.rename(sd) if family.rename else sd
        guessed = family.guess(state)
        if guessed is None:
            continue
        kwargs, summary = guessed
        problem = _mismatch(family.arch, kwargs, state)
        if problem is None:
            if family.rename:
                summary += " (original ESRGAN layout)"
            return Detection(family=family.name, arch=family.spec_arch or family.arch, arch_kwargs=kwargs,
                             task=family.task,
                             value_range=family.value_range, summary=summary,
                             **_size_rules(family.arch, kwargs)), None
        near_miss = near_miss or f"looks like {summary} but is a variant we do not build ({problem})"
    return None, near_miss


def _detect_spandrel(sd: dict[str, torch.Tensor], built: dict[str, nn.Module] | None, key: str) -> Detection:
    descriptor = describe_spandrel(sd)
    if built is not None:  # spandrel built it with the weights loaded: the caller may hand it to the loader
        built[key] = fuse_reparametrised(descriptor.model.float().eval())
    arch = descriptor.architecture.name
    multiple = max(1, descriptor.size_requirements.multiple_of)
    # SUPPORTED, DISCOURAGED (SwinIR, SCUNet: window attention, whose memory grows fast with the image, so they are
    # tiled too, with larger tiles: fewer seams) or INTERNAL (the network tiles itself).
    tile = {"SUPPORTED": _TILE_SR, "DISCOURAGED": _TILE_DISCOURAGED}.get(descriptor.tiling.name)
    if tile is not None:
        tile = -(-max(tile, descriptor.size_requirements.minimum) // multiple) * multiple
    tags = " ".join(descriptor.tags)
    return Detection(
        family=f"{arch} (via spandrel)", arch="spandrel",
        arch_kwargs={"architecture": descriptor.architecture.id, "tags": tags},
        task=SR_TASK, value_range=(0.0, 1.0), scale=descriptor.scale,
        size_multiple=multiple, tile=tile, summary=f"{arch} x{descriptor.scale}" + (f" ({tags})" if tags else ""),
    )


def _detect_rest(sd: dict[str, torch.Tensor], near_miss: str | None, source: str,
                 built: dict[str, nn.Module] | None = None, key: str = "") -> Detection:
    """spandrel's detection of `sd`, also after a near miss of ours (spandrel builds variants we do not: old-layout
    ESRGAN x2/x1); else one line naming what our near miss and spandrel found."""
    try:
        return _detect_spandrel(sd, built, key)
    except UnrecognisedNetworkError:
        found = [near_miss] if near_miss else []
    except UnsupportedModelError as exc:
        found = [near_miss, str(exc)] if near_miss else [str(exc)]
    what = "; ".join(found) or "not a CycleGAN/Pix2Pix/SR generator we know"
    raise UnsupportedModelError(f"{source}: {describe_keys(sd)}; {what} (supported layouts: {DOCS})")


def detect_network(state: Mapping[str, Any], *, key_prefix: str | None = None, source: str = "checkpoint",
                   built: dict[str, nn.Module] | None = None) -> Detection:
    """What one network in `state` is (all of it, or the `key_prefix` part).

    Our families are tried first; a near miss (a family whose numbers fit but whose keys do not all match) falls
    through to spandrel, which builds many variants we do not (e.g. old-layout ESRGAN x2 and x1 without
    pixel-unshuffle). Only when spandrel fails too is the file refused, with what both found.

    `built`, when given, receives under `key_prefix or ""` the network spandrel built (weights loaded, fp32, eval)
    if spandrel is what recognised it; our families are only checked on the meta device, so nothing is built.

    Raises:
        UnsupportedModelError: nothing fits; one line naming what the file holds (our near miss and spandrel's
            detail) and pointing to docs/custom-models.md.
    """
    sd = unwrap_state_dict(state, key_prefix=key_prefix)
    if not sd:
        where = f" under {key_prefix!r}" if key_prefix else ""
        raise UnsupportedModelError(f"{source}: no tensors{where}")
    detection, near_miss = _detect_ours(sd)
    if detection is None:
        detection = _detect_rest(sd, near_miss, source, built, key_prefix or "")
    return replace(detection, key_prefix=key_prefix) if key_prefix else detection


def find_generators(state: Mapping[str, Any], *, source: str = "checkpoint",
                    built: dict[str, nn.Module] | None = None) -> dict[str, Detection]:
    """Every generator in `state` by name: {"": detection} for a file that is one network, else one entry per
    top-level prefix that holds a generator (CycleGAN training files: "G_A", "G_B"; "netG_A", ...).
    Discriminators and other parts are left out.

    Order: our families on the whole file, then on each prefix (so a training file of several networks of ours is
    split before spandrel ever sees it: spandrel on a whole 100 MB training file costs seconds and hundreds of MB),
    then spandrel on the whole file, then on each prefix. `built`: as for `detect_network`.

    Raises:
        UnsupportedModelError: neither the whole file nor any prefix is a network we know; one line.
    """
    sd = unwrap_state_dict(state)
    if not sd:
        raise UnsupportedModelError(f"{source}: no tensors")
    whole, near_miss = _detect_ours(sd)
    if whole is not None:
        return {"": whole}
    groups = top_level_groups(sd)
    found: dict[str, Detection] = {}
    for name in groups:
        detection, _ = _detect_ours(unwrap_state_dict(sd, key_prefix=f"{name}."))
        if detection is not None:
            found[name] = replace(detection, key_prefix=f"{name}.")
    if found:
        return found
    try:
        return {"": _detect_rest(sd, near_miss, source, built)}
    except UnsupportedModelError as exc:
        failure = exc
    for name in groups:
        try:
            found[name] = detect_network(sd, key_prefix=f"{name}.", source=source, built=built)
        except UnsupportedModelError:
            continue
    if not found:
        raise failure
    return found

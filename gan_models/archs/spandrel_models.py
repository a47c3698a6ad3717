"""Networks we have no file for, built from their state dict by spandrel (chaiNNer-org/spandrel, MIT).

spandrel recognises some 40 image-restoration architectures (ESRGAN in its old `model.N` layout, SPAN, SwinIR,
HAT, DAT, OmniSR, ...) from the keys and shapes of a state dict and constructs the network with those numbers.
Our own files stay the one implementation of the curated architectures (resnet_generator, unet_generator,
huggan_unet, srresnet, rrdbnet, srvgg_compact): train.py trains them, their state-dict keys are the published
ones and the tests check them against ONNX. spandrel serves only what those do not cover.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UnrecognisedNetworkError, UnsupportedModelError
from ..state_dict import unwrap_state_dict

# Our pipeline feeds RGB arrays and expects RGB back.
SPANDREL_CHANNELS = 3


def load_error_summary(exc: BaseException, *, shown: int = 2) -> str:
    """One line from an exception; torch's multi-line `load_state_dict` report becomes its gist.

    'Error(s) in loading state_dict for RRDBNet:' followed by lines of missing keys, unexpected keys and size
    mismatches becomes e.g. 'RRDBNet does not match the file: missing 2 keys (model.3.weight, model.3.bias);
    unexpected 1 key (model.5.weight); wrong shape model.0.weight (file [16, 3, 3, 3], network [16, 12, 3, 3])'.
    """
    text = str(exc).strip()
    head = re.match(r"Error\(s\) in loading state_dict for (\w+):", text)
    if head is None:
        lines = text.splitlines()
        return f"{type(exc).__name__}: {lines[0].strip()[:300] if lines else ''}"
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        if found := re.search(pattern, text):
            keys = re.findall(r'"([^"]+)"', found[1])
            more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
            parts.append(f"{label} {len(keys)} key{'s' * (len(keys) != 1)} ({', '.join(keys[:shown])}{more})")
    shapes = re.findall(r"size mismatch for ([\w.]+): copying a param with shape torch.Size\((\[[^\]]*\])\) from "
                        r"checkpoint, the shape in current model is torch.Size\((\[[^\]]*\])\)", text)
    for key, file_shape, model_shape in shapes[:shown]:
        parts.append(f"wrong shape {key} (file {file_shape}, network {model_shape})")
    if len(shapes) > shown:
        parts.append(f"{len(shapes) - shown} more wrong shapes")
    return f"{head[1]} does not match the file: " + ("; ".join(parts) or "keys differ")


def describe_spandrel(state_dict: Mapping[str, torch.Tensor]):  # -> spandrel.ImageModelDescriptor
    """spandrel's descriptor (network with the weights loaded, scale, size rules) for an RGB image-to-image model.

    Raises:
        UnrecognisedNetworkError: spandrel knows no such network.
        UnsupportedModelError: spandrel could not build it, or it is not an RGB image-to-image model (an
            inpainting model, a grayscale one); the message says which.
    """
    # Imported here: spandrel registers ~40 architectures on import (about a second), needed only for such files.
    from spandrel import ImageModelDescriptor, ModelLoader
    from spandrel import UnsupportedModelError as SpandrelUnsupported

    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(dict(state_dict))
    except SpandrelUnsupported:
        raise UnrecognisedNetworkError("spandrel recognises no architecture in these keys") from None
    except Exception as exc:  # noqa: BLE001 - a known architecture whose numbers spandrel could not fit
        raise UnsupportedModelError(f"spandrel could not build it: {load_error_summary(exc)}") from exc
    arch = descriptor.architecture.name
    if not isinstance(descriptor, ImageModelDescriptor):
        raise UnsupportedModelError(f"{arch} ({descriptor.purpose}) needs a mask or other extra input; "
                                    "only image-to-image networks are served")
    if descriptor.input_channels != SPANDREL_CHANNELS or descriptor.output_channels != SPANDREL_CHANNELS:
        raise UnsupportedModelError(f"{arch} takes {descriptor.input_channels} and returns "
                                    f"{descriptor.output_channels} channels; only RGB (3) models are served")
    return descriptor


def build_spandrel(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """The network spandrel detects in `state_dict`, with those weights loaded (strictly), fp32, in eval mode.

    `state_dict` is the checkpoint as read (a `params_ema` wrapper, `module.` prefixes are removed here) or
    already unwrapped; a file holding several networks must be cut to the chosen one's keys first.
    """
    return fuse_reparametrised(describe_spandrel(unwrap_state_dict(state_dict)).model.float().eval())


def fuse_reparametrised(model: nn.Module) -> nn.Module:
    """Fuse re-parametrised convolutions once, so that forward no longer rewrites weights.

    SPAN's Conv3XC recomputes its fused `eval_conv` weights from its training branches on every eval-mode call
    (`update_params()`, which assigns `.data`): wasted work per call, and torch.onnx.export (dynamo) crashes the
    whole process with a segmentation fault while tracing those assignments (torch 2.14). The weights are fixed
    once loaded, so the fusion is done here once and the per-call one becomes a no-op: outputs are unchanged.
    """
    for module in model.modules():
        if callable(getattr(module, "update_params", None)) and isinstance(getattr(module, "eval_conv", None),
                                                                           nn.Conv2d):
            with torch.no_grad():
                module.update_params()
            module.update_params = _no_update  # the instance attribute shadows the method
    return model


def _no_update() -> None:
    """What a fused module's `update_params` does from then on: nothing."""

"""Networks we have no file for, built from their state dict by spandrel (chaiNNer-org/spandrel, MIT).

spandrel recognises some 40 image-restoration architectures (ESRGAN in its old `model.N` layout, SPAN, SwinIR,
HAT, DAT, OmniSR, ...) from the keys and shapes of a state dict and constructs the network with those numbers.
Our own files stay the one implementation of the curated architectures (resnet_generator, unet_generator,
huggan_unet, srresnet, rrdbnet, srvgg_compact): train.py trains them, their state-dict keys are the published
ones and the tests check them against ONNX. spandrel serves only what those do not cover.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UnrecognisedNetworkError, UnsupportedModelError, first_line
from ..state_dict import unwrap_state_dict

# Our pipeline feeds RGB arrays and expects RGB back.
SPANDREL_CHANNELS = 3


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
        raise UnsupportedModelError(f"spandrel could not build it: {type(exc).__name__}: {first_line(exc)}") from exc
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
    return describe_spandrel(unwrap_state_dict(state_dict)).model.float().eval()

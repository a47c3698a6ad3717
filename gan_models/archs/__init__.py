"""Network architectures, one file each, with state-dict keys identical to the checkpoints we load.

ARCHS maps the `arch` name a ModelSpec uses to the class; `build_arch` constructs one with keyword arguments.
STATE_BUILT_ARCHS maps the `arch` names of networks that are built from a checkpoint's state dict itself (their
numbers are read from the tensors' shapes) to a function taking that state dict and returning the network with
the weights loaded; no ARCHS name appears there.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import GanModelsError
from .discriminators import NLayerDiscriminator, SRGANDiscriminator
from .resnet_generator import ResnetGenerator
from .rrdbnet import RRDBNet, build_rrdbnet_from_esrgan
from .spandrel_models import build_spandrel
from .srresnet import SRResNet
from .srvgg import SRVGGNetCompact
from .unet_generator import HugganUnetGenerator, UnetGenerator

ARCHS: dict[str, type[nn.Module]] = {
    "resnet_generator": ResnetGenerator,
    "unet_generator": UnetGenerator,
    "huggan_unet": HugganUnetGenerator,
    "srresnet": SRResNet,
    "rrdbnet": RRDBNet,
    "srvgg_compact": SRVGGNetCompact,
    "patchgan": NLayerDiscriminator,
    "srgan_discriminator": SRGANDiscriminator,
}

# Networks whose shape is read from the checkpoint itself (spandrel, original-ESRGAN layout): name → builder taking
# the checkpoint's tensors (wrappers and `module.` / `_orig_mod.` prefixes already removed) and returning the network
# with those weights loaded strictly. `weights.load_model` uses these instead of ARCHS for the spec's `arch`.
STATE_BUILT_ARCHS: dict[str, Callable[[dict], nn.Module]] = {
    "rrdbnet_esrgan": build_rrdbnet_from_esrgan,
    "spandrel": build_spandrel,
}


class UnknownArchError(GanModelsError, KeyError):
    """An architecture name that is not in ARCHS (the message lists the valid names)."""

    def __str__(self) -> str:  # KeyError would repr() the message with quotes
        return str(self.args[0]) if self.args else ""


def build_arch(name: str, **kwargs: object) -> nn.Module:
    """Construct the network registered under `name`.

    Parameters:
        name: a key of ARCHS.
        **kwargs: keyword arguments of that class's constructor.

    Raises:
        UnknownArchError: `name` is not in ARCHS.
        TypeError: a keyword the constructor does not take.
    """
    try:
        cls = ARCHS[name]
    except KeyError:
        raise UnknownArchError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHS))}") from None
    return cls(**kwargs)


__all__ = [
    "ARCHS",
    "STATE_BUILT_ARCHS",
    "HugganUnetGenerator",
    "NLayerDiscriminator",
    "RRDBNet",
    "ResnetGenerator",
    "SRGANDiscriminator",
    "SRResNet",
    "SRVGGNetCompact",
    "STATE_BUILT_ARCHS",
    "UnetGenerator",
    "UnknownArchError",
    "build_arch",
]

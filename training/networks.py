"""The networks a run trains: the generator (--model / --init / the mode's bundled default) and the discriminators."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_models.archs import build_arch
from gan_models.specs import SPECS, ModelSpec, get_spec
from gan_models.weights import build_generator, load_model

from . import TrainError


@dataclass(frozen=True)
class Generator:
    """The generator to train, the spec it follows, and the spec whose weights it starts from (--init), if any."""

    spec: ModelSpec
    module: nn.Module
    init_spec: ModelSpec | None


def model_ref(model_id: str) -> str:
    """A train.py run folder stands for its final/ model, so `--init runs/x4` works like `--init runs/x4/final`."""
    final = Path(model_id) / "final"
    return str(final) if model_id not in SPECS and (final / "config.json").is_file() else model_id


def generator_to_train(*, task: str, mode: str, default_model: str, model: str | None,
                       arch_kwargs: dict | None, init: str | None) -> Generator:
    """The spec whose architecture is trained, and its generator: --init's weights, else freshly initialised.

    The architecture is --model's, else --init's, else the mode's bundled default; --arch-kwargs edits it.
    """
    loaded = None
    if init:
        loaded = load_model(get_spec(model_ref(init)))
        if loaded.fell_back:
            print(f"note: {loaded.fallback_reason}", file=sys.stderr)
    if model:
        spec = get_spec(model_ref(model))
    else:
        spec = loaded.spec if loaded else SPECS[default_model]
    if spec.task != task:
        raise TrainError(f"{spec.id} is a {spec.task} model; {mode} trains {task} models")
    if arch_kwargs:
        kwargs = {**spec.arch_kwargs, **arch_kwargs}
        multiple = spec.size_multiple
        if spec.arch == "unet_generator":  # the U-Net's bottleneck is 1x1 at 2**num_downs pixels
            multiple = 2 ** int(kwargs.get("num_downs", 8))
        spec = dataclasses.replace(spec, arch_kwargs=kwargs, size_multiple=multiple)
    if loaded is not None:
        if (loaded.spec.arch, dict(loaded.spec.arch_kwargs)) != (spec.arch, dict(spec.arch_kwargs)):
            raise TrainError(f"--init {init} is a {loaded.spec.arch} {dict(loaded.spec.arch_kwargs)}, not the "
                             f"{spec.arch} {dict(spec.arch_kwargs)} being trained; drop --model/--arch-kwargs")
        return Generator(spec=spec, module=loaded.module.train(), init_spec=loaded.spec)
    try:
        return Generator(spec=spec, module=build_generator(spec), init_spec=None)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"cannot build {spec.arch} with {dict(spec.arch_kwargs)}: {exc}") from exc


def patchgan(*, in_channels: int, width: int, use_spectral_norm: bool) -> nn.Module:
    """The 70x70 PatchGAN of CycleGAN and Pix2Pix (InstanceNorm; no norm layers under spectral normalisation)."""
    return build_arch("patchgan", in_channels=in_channels, ndf=width, n_layers=3,
                      norm="none" if use_spectral_norm else "instance", spectral_norm=use_spectral_norm)


def srgan_classifier(*, width: int, use_spectral_norm: bool) -> nn.Module:
    """SRGAN's real/fake classifier of HR images."""
    d = build_arch("srgan_discriminator", in_channels=3, channels=width)
    if use_spectral_norm:  # the SRGAN classifier has no switch for it: wrap its conv and dense layers here
        layers = [(m, name, c) for m in d.modules() for name, c in m.named_children()
                  if isinstance(c, (nn.Conv2d, nn.Linear))]
        for parent, name, layer in layers:
            setattr(parent, name, spectral_norm(layer))
    return d

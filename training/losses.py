"""Losses and stabilisers shared by the modes: GAN objectives, WGAN-GP, feature matching, CycleGAN's image pool
and SRGAN's VGG19 content loss (torchvision is imported only here, and only when that loss is built)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VGG19_FILE = "vgg19-dcbb9e9d.pth"  # the name torchvision's weights cache uses for VGG19_Weights.IMAGENET1K_V1


class GanLoss:
    """D and G objectives for lsgan / vanilla / hinge / wgangp; one-sided label smoothing for D's real target."""

    def __init__(self, kind: str, real_label: float) -> None:
        self.kind, self.real_label = kind, real_label

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        real, fake = real.float(), fake.float()
        if self.kind == "lsgan":  # halved, as the papers do, so D learns at half G's pace
            return 0.5 * (F.mse_loss(real, torch.full_like(real, self.real_label)) + fake.pow(2).mean())
        if self.kind == "vanilla":
            return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.full_like(real, self.real_label))
                          + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        if self.kind == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return fake.mean() - real.mean()  # wgangp; the caller adds the gradient penalty

    def g_loss(self, fake: Tensor) -> Tensor:
        fake = fake.float()
        if self.kind == "lsgan":
            return F.mse_loss(fake, torch.ones_like(fake))
        if self.kind == "vanilla":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        return -fake.mean()


def gradient_penalty(d: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al.): 10 * (|grad D(mix)| - 1)^2, computed in fp32."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
    return 10.0 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class FeatureTap:
    """Collects D's LeakyReLU outputs during one forward pass, for feature matching (Salimans et al.)."""

    def __init__(self, d: nn.Module) -> None:
        self.features: list[Tensor] = []
        self.active = False
        for module in d.modules():
            if isinstance(module, nn.LeakyReLU):
                module.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, out: Tensor) -> None:
        if self.active:
            self.features.append(out)

    def run(self, d: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        self.features, self.active = [], True
        try:
            return d(x), self.features
        finally:
            self.active = False


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): D also sees older fakes, which damps oscillation.

    Kept on the training device, so querying it never waits for the GPU.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, batch: Tensor, rng: random.Random) -> Tensor:
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif rng.random() < 0.5:
                i = rng.randrange(self.size)
                out.append(self.images[i])
                self.images[i] = img
            else:
                out.append(img)
        return torch.stack(out)


class VggContent(nn.Module):
    """SRGAN's content loss: MSE of VGG19 relu5_4 features, scaled by 1/12.75^2 as in the paper.

    Only built from torchvision's local weights cache; training never downloads anything.
    """

    def __init__(self, value_range: tuple[float, float]) -> None:
        super().__init__()
        import torchvision

        cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
        if not cached.is_file():
            raise FileNotFoundError(cached)
        vgg = torchvision.models.vgg19()
        vgg.load_state_dict(torch.load(cached, weights_only=True, map_location="cpu"))
        self.features = vgg.features[:36].eval().requires_grad_(False)  # up to relu5_4
        lo, hi = value_range
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        # one affine map from the model's range to ImageNet-normalised input
        self.register_buffer("scale", (1.0 / ((hi - lo) * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", ((-lo / (hi - lo) - mean) / std).view(1, 3, 1, 1))

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return F.mse_loss(self.features(sr * self.scale + self.shift),
                          self.features(hr * self.scale + self.shift)) / 12.75**2

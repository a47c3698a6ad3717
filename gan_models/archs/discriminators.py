"""Discriminators for fine-tuning: the PatchGAN of pix2pix/CycleGAN and the SRGAN classifier.

Neither is loaded from published checkpoints by the studio, but both keep their reference key layouts
(junyanz `model.N.*`; goodfellowliu `features.N.*` / `classifier.N.*`) so such files would load.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

PatchNorm = Literal["batch", "instance", "none"]
PATCH_NORMS: tuple[str, ...] = ("batch", "instance", "none")


def _patch_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    # Identity keeps the Sequential indices, and therefore the keys, the same for every norm.
    return nn.Identity()


class NLayerDiscriminator(nn.Module):
    """PatchGAN: a fully convolutional net whose every output logit judges one overlapping input patch.

    With n_layers=3 each logit sees a 70x70 patch; a 256x256 input gives a (N, 1, 30, 30) logit map.
    Outputs are raw logits (no sigmoid), for use with BCEWithLogits or least-squares losses.

    Parameters:
        in_channels: channels of the judged image (pix2pix judges input and output concatenated: 6).
        ndf: width of the first layer.
        n_layers: stride-2 convs after the first one, minus one; sets the patch size.
        norm: "batch", "instance" (no parameters) or "none".
        spectral_norm: wrap every conv in spectral normalisation (Miyato et al. 2018) to bound D's Lipschitz
            constant; usually combined with norm="none".
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: PatchNorm = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if norm not in PATCH_NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(PATCH_NORMS)}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        # A conv followed by BatchNorm needs no bias of its own. junyanz also drops it for norm="none", which
        # leaves those layers without any shift; we keep it there.
        use_bias = norm != "batch"

        def conv(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1, bias=bias)
            return _spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = [conv(in_channels, ndf, 2, True), nn.LeakyReLU(0.2, True)]  # (N, ndf, H/2, W/2)
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            # (N, ndf*mult, H/2**(n+1), W/2**(n+1))
            layers += [
                conv(ndf * prev, ndf * mult, 2, use_bias),
                _patch_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [conv(ndf * prev, ndf * mult, 1, use_bias), _patch_norm(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(conv(ndf * mult, 1, 1, True))  # (N, 1, H/2**n_layers - 2, W/2**n_layers - 2)
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class SRGANDiscriminator(nn.Module):
    """SRGAN's VGG-style classifier: eight 3x3 convs (four stride 2), two dense layers, one logit per image.

    The reference net only accepts 96x96 crops (512*6*6 features into the first dense layer). An adaptive
    average pool to 6x6 in front of the dense layers keeps that layer's shape, and is the identity at 96x96,
    while letting any input of at least 32x32 through.

    Parameters:
        in_channels: channels of the judged image.
        channels: width of the first layers (64 in SRGAN); later ones use 2x, 4x and 8x.
    """

    def __init__(self, *, in_channels: int = 3, channels: int = 64) -> None:
        super().__init__()
        widths = [channels * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=True), nn.LeakyReLU(0.2, True)]
        for i in range(1, len(widths)):
            # Odd layers halve the resolution: (N, channels*8, H/16, W/16) after the last one.
            stride = 2 if i % 2 == 1 else 1
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], 3, stride, 1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2, True),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(widths[-1] * 6 * 6, 1024),
            nn.LeakyReLU(0.2, True),
            nn.Linear(1024, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] < 32 or x.shape[-2] < 32:
            raise ValueError(f"SRGANDiscriminator needs inputs of at least 32x32, got {tuple(x.shape[-2:])}")
        feat = self.pool(self.features(x))  # (N, 8*channels, 6, 6)
        return self.classifier(feat.flatten(1))  # (N, 1) logits

"""Pix2Pix U-Net generators (Isola et al. 2017) in the two layouts that published checkpoints use.

`UnetGenerator` reproduces the junyanz/pytorch-CycleGAN-and-pix2pix nesting: each level is a
`UnetSkipConnectionBlock` whose `model` Sequential holds the next level, so keys read `model.model.0.weight`
(outermost down conv), `model.model.1.model.1.weight` (second level down conv), `model.model.1.model.3.model...`.

`HugganUnetGenerator` reproduces the flat `GeneratorUNet` of huggingface/community-events (huggan pix2pix models):
`down1..8.model.0.weight`, `up1..7.model.0.weight`, `final.2.weight/bias`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

UnetNorm = Literal["batch", "instance"]
UNET_NORMS: tuple[str, ...] = ("batch", "instance")


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: downsample, run the inner levels, upsample, and concatenate the input as a skip.

    The Sequential indices follow the junyanz layout so checkpoint keys match:
    outermost `[down conv, inner, ReLU, up conv, Tanh]`; middle `[LeakyReLU, down conv, norm, inner, ReLU, up conv,
    norm(, Dropout)]`; innermost `[LeakyReLU, down conv, ReLU, up conv, norm]`.

    Parameters:
        outer_nc: channels this level returns to its parent (before the skip concatenation).
        inner_nc: channels after this level's down conv.
        input_nc: channels entering this level; defaults to outer_nc (only the outermost level differs).
        submodule: the next inner level, or None for the innermost one.
        outermost, innermost: position of the level.
        norm: "batch" (BatchNorm, convs without bias) or "instance" (InstanceNorm without parameters, convs with bias).
        use_dropout: Dropout(0.5) after the middle levels' up path, as pix2pix uses for noise.
    """

    def __init__(
        self,
        *,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: UnetNorm = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        # BatchNorm has its own shift, so the convs before it carry no bias; InstanceNorm here has none.
        use_bias = norm == "instance"
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        layers: list[nn.Module]
        if outermost:
            if submodule is None:
                raise ValueError("the outermost U-Net level needs a submodule")
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, _norm(norm, outer_nc)]
        else:
            if submodule is None:
                raise ValueError("a middle U-Net level needs a submodule")
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [
                nn.LeakyReLU(0.2, True),
                downconv,
                _norm(norm, inner_nc),
                submodule,
                nn.ReLU(True),
                upconv,
                _norm(norm, outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)  # (N, C_in, H, W) -> (N, outer_nc, H, W)
        # (N, C, H, W) -> (N, C + outer_nc, H, W): the skip connection
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """junyanz pix2pix U-Net: num_downs stride-2 levels, skips between mirrored levels, Tanh output in [-1, 1].

    Height and width must be multiples of 2**num_downs (256 for num_downs=8), since the bottleneck is 1x1 there.

    Parameters:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        num_downs: number of downsamplings (>= 5); 8 for 256 px pix2pix models.
        ngf: channels of the outermost level (64 in the official models).
        norm: "batch" (official pix2pix) or "instance".
        use_dropout: Dropout(0.5) in the innermost ngf*8 levels (official pix2pix trains with it).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: UnetNorm = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if norm not in UNET_NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(UNET_NORMS)}")
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        # Built from the inside out: the bottleneck first, the level touching the image last.
        block = UnetSkipConnectionBlock(outer_nc=ngf * 8, inner_nc=ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                outer_nc=ngf * 8, inner_nc=ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(outer_nc=ngf * 4, inner_nc=ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(outer_nc=ngf * 2, inner_nc=ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(outer_nc=ngf, inner_nc=ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            outer_nc=out_channels, inner_nc=ngf, input_nc=in_channels, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (N, C, H, W) -> (N, C', H, W)


class _HugganDown(nn.Module):
    """Conv 4x4 stride 2 (no bias), optional InstanceNorm, LeakyReLU(0.2), optional Dropout."""

    def __init__(self, *, in_size: int, out_size: int, normalize: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_size, out_size, 4, 2, 1, bias=False)]
        if normalize:
            layers.append(nn.InstanceNorm2d(out_size))
        layers.append(nn.LeakyReLU(0.2))
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (N, in, H, W) -> (N, out, H/2, W/2)


class _HugganUp(nn.Module):
    """Transposed conv 4x4 stride 2 (no bias), InstanceNorm, ReLU, optional Dropout; then concat the skip."""

    def __init__(self, *, in_size: int, out_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_size, out_size, 4, 2, 1, bias=False),
            nn.InstanceNorm2d(out_size),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        # (N, in, H, W) -> (N, out + skip channels, 2H, 2W); upsampled features first, as the checkpoints expect
        return torch.cat((self.model(x), skip), 1)


class HugganUnetGenerator(nn.Module):
    """The huggan pix2pix `GeneratorUNet`: 8 downsamplings, 7 skip upsamplings, nearest upsample + conv, Tanh.

    Widths are fixed (64..512) as in the published models. Height and width must be multiples of 256: the
    bottleneck is 1x1 there and InstanceNorm on a 1x1 map one level up would fail.

    Parameters:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.down1 = _HugganDown(in_size=in_channels, out_size=64, normalize=False)
        self.down2 = _HugganDown(in_size=64, out_size=128)
        self.down3 = _HugganDown(in_size=128, out_size=256)
        self.down4 = _HugganDown(in_size=256, out_size=512, dropout=0.5)
        self.down5 = _HugganDown(in_size=512, out_size=512, dropout=0.5)
        self.down6 = _HugganDown(in_size=512, out_size=512, dropout=0.5)
        self.down7 = _HugganDown(in_size=512, out_size=512, dropout=0.5)
        self.down8 = _HugganDown(in_size=512, out_size=512, normalize=False, dropout=0.5)

        self.up1 = _HugganUp(in_size=512, out_size=512, dropout=0.5)
        self.up2 = _HugganUp(in_size=1024, out_size=512, dropout=0.5)
        self.up3 = _HugganUp(in_size=1024, out_size=512, dropout=0.5)
        self.up4 = _HugganUp(in_size=1024, out_size=512, dropout=0.5)
        self.up5 = _HugganUp(in_size=1024, out_size=256)
        self.up6 = _HugganUp(in_size=512, out_size=128)
        self.up7 = _HugganUp(in_size=256, out_size=64)

        # The asymmetric zero pad keeps a 4x4 conv size-preserving after the 2x nearest upsample.
        self.final = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(128, out_channels, 4, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)  # (N, 64, H/2, W/2)
        d2 = self.down2(d1)  # (N, 128, H/4, W/4)
        d3 = self.down3(d2)  # (N, 256, H/8, W/8)
        d4 = self.down4(d3)  # (N, 512, H/16, W/16)
        d5 = self.down5(d4)  # (N, 512, H/32, W/32)
        d6 = self.down6(d5)  # (N, 512, H/64, W/64)
        d7 = self.down7(d6)  # (N, 512, H/128, W/128)
        d8 = self.down8(d7)  # (N, 512, H/256, W/256)
        u = self.up1(d8, d7)  # (N, 1024, H/128, W/128)
        u = self.up2(u, d6)  # (N, 1024, H/64, W/64)
        u = self.up3(u, d5)  # (N, 1024, H/32, W/32)
        u = self.up4(u, d4)  # (N, 1024, H/16, W/16)
        u = self.up5(u, d3)  # (N, 512, H/8, W/8)
        u = self.up6(u, d2)  # (N, 256, H/4, W/4)
        u = self.up7(u, d1)  # (N, 128, H/2, W/2)
        return self.final(u)  # (N, out_channels, H, W)

"""CycleGAN's ResNet generator (Johnson et al. 2016, as used by Zhu et al. 2017).

The layer order reproduces the junyanz/pytorch-CycleGAN-and-pix2pix `ResnetGenerator` exactly, so the official
`latest_net_G.pth` files load with `load_state_dict(strict=True)`: with ngf=64 and n_blocks=9 the parameter keys are
`model.1.*`, `model.4.*`, `model.7.*`, `model.{10..18}.conv_block.{1,5}.*`, `model.19.*`, `model.22.*`, `model.26.*`.
"""

from __future__ import annotations

from torch import Tensor, nn


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    # No affine parameters and no running stats: the official checkpoints hold neither (beyond stray buffers that
    # the loader drops), and per-image statistics are what the networks were trained with.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with InstanceNorm and an identity shortcut.

    Parameters:
        dim: channels in and out.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        # Indices matter: the checkpoint keys are conv_block.1 and conv_block.5.
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            _instance_norm(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            _instance_norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator: 2 stride-2 downsamplings, n_blocks residual blocks, 2 transposed-conv upsamplings.

    Input and output are in [-1, 1] (Tanh). Height and width must be multiples of 4 for the output to match the
    input size exactly.

    Parameters:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        ngf: width of the first layer (64 in the official models; 32 for our small defaults).
        n_blocks: residual blocks at 1/4 resolution (9 for 256 px CycleGAN models, 6 for 128 px ones).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        # InstanceNorm follows every conv but the last, yet the convs keep their bias: the junyanz code enables bias
        # whenever the norm is InstanceNorm, and the checkpoints carry those biases.
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, padding=0, bias=True),  # (N, ngf, H, W)
            _instance_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                _instance_norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        # (N, 4*ngf, H/4, W/4)
        layers += [ResnetBlock(dim=ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True
                ),
                _instance_norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        # (N, ngf, H, W)
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, out_channels, kernel_size=7, padding=0),  # (N, out_channels, H, W)
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (N, C, H, W) -> (N, C', H, W)

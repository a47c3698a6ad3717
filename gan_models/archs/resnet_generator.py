"""CycleGAN's ResNet generator (Johnson et al. 2016, as used by Zhu et al. 2017).

The layer order reproduces the junyanz/pytorch-CycleGAN-and-pix2pix `ResnetGenerator` exactly, so the official
`latest_net_G.pth` files load with `load_state_dict(strict=True)`: with ngf=64 and n_blocks=9 the parameter keys are
`model.1.*`, `model.4.*`, `model.7.*`, `model.{10..18}.conv_block.{1,5}.*`, `model.19.*`, `model.22.*`, `model.26.*`.

junyanz's other options are built too: `--norm batch` (pix2pix's default; BatchNorm2d with running statistics, and
convolutions without bias, as its `use_bias` rule has it) and dropout (`use_dropout=True`, junyanz's default for
CycleGAN runs; a no-op in eval mode, but the Dropout module shifts the second conv of each block to
`conv_block.6`). UPIT's (tmabraham) `resnet_generator` is the same Sequential without the `model.` level.
"""

from __future__ import annotations

from torch import Tensor, nn

NORMS = ("instance", "batch")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":  # junyanz get_norm_layer("batch"): affine, with running statistics
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    # No affine parameters and no running stats: the official checkpoints hold neither (beyond stray buffers that
    # the loader drops), and per-image statistics are what the networks were trained with.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with a norm each and an identity shortcut.

    Parameters:
        dim: channels in and out.
        norm: "instance" or "batch".
        dropout: a Dropout(0.5) between the two convolutions (junyanz `use_dropout`).
    """

    def __init__(self, *, dim: int, norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        bias = norm == "instance"
        # Indices matter: the checkpoint keys are conv_block.1 and conv_block.5 (conv_block.6 after a Dropout).
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            _norm(norm, dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

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
        norm: "instance" (CycleGAN's default) or "batch" (pix2pix's default).
        dropout: Dropout(0.5) inside each residual block (junyanz `use_dropout`; only the keys change in eval).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        # A norm follows every conv but the last; the junyanz code gives those convs a bias only with InstanceNorm
        # (BatchNorm has its own shift), and the checkpoints carry exactly those biases.
        bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, padding=0, bias=bias),  # (N, ngf, H, W)
            _norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                _norm(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        # (N, 4*ngf, H/4, W/4)
        layers += [ResnetBlock(dim=ngf * 4, norm=norm, dropout=dropout) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                _norm(norm, ngf * mult // 2),
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

"""SRResNet, the generator of SRGAN (Ledig et al. 2017), in the goodfellowliu/SRGAN-PyTorch key layout.

Keys: `conv1.0` (9x9 conv), `conv1.1` (PReLU, one slope), `trunk.N.rcb.{0,1,3,4}` (conv, BN, PReLU, conv, BN),
`conv2.{0,1}` (conv, BN), `upsampling.K.upsample_block.{0,2}` (conv, PReLU around a PixelShuffle), `conv3`.
Input and output are RGB in [0, 1].
"""

from __future__ import annotations

from torch import Tensor, nn

SRRESNET_UPSCALES: tuple[int, ...] = (2, 3, 4, 8)


class _ResidualConvBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity shortcut.

    Parameters:
        channels: channels in and out.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        # The convs carry no bias because a BatchNorm follows each of them.
        self.rcb = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.rcb(x)


class _UpsampleBlock(nn.Module):
    """Sub-pixel upsampling: conv to channels*factor**2, PixelShuffle(factor), PReLU.

    Parameters:
        channels: channels in and out.
        factor: spatial upscaling of this block (2 or 3).
    """

    def __init__(self, *, channels: int, factor: int) -> None:
        super().__init__()
        self.upsample_block = nn.Sequential(
            nn.Conv2d(channels, channels * factor * factor, 3, 1, 1),
            nn.PixelShuffle(factor),
            nn.PReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample_block(x)  # (N, C, H, W) -> (N, C, H*factor, W*factor)


class SRResNet(nn.Module):
    """SRGAN generator: 9x9 head, num_rcb residual blocks with a long skip, sub-pixel upsampling, 9x9 tail.

    The output is clamped to [0, 1] as in the reference implementation, so every pixel is a valid colour.

    Parameters:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        channels: feature width (64 in the published models).
        num_rcb: residual blocks in the trunk (16 in the published models).
        upscale: output size / input size: 2, 4 or 8 (chained x2 blocks) or 3 (one x3 block).
    """

    def __init__(
        self, *, in_channels: int = 3, out_channels: int = 3, channels: int = 64, num_rcb: int = 16, upscale: int = 4
    ) -> None:
        super().__init__()
        if upscale not in SRRESNET_UPSCALES:
            raise ValueError(f"unsupported upscale {upscale}; valid: {', '.join(map(str, SRRESNET_UPSCALES))}")
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, channels, 9, 1, 4), nn.PReLU())
        self.trunk = nn.Sequential(*[_ResidualConvBlock(channels=channels) for _ in range(num_rcb)])
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        factors = [3] if upscale == 3 else [2] * (upscale.bit_length() - 1)
        self.upsampling = nn.Sequential(*[_UpsampleBlock(channels=channels, factor=f) for f in factors])
        self.conv3 = nn.Conv2d(channels, out_channels, 9, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        head = self.conv1(x)  # (N, channels, H, W)
        feat = head + self.conv2(self.trunk(head))  # (N, channels, H, W)
        feat = self.upsampling(feat)  # (N, channels, H*upscale, W*upscale)
        return self.conv3(feat).clamp(0.0, 1.0)  # (N, out_channels, H*upscale, W*upscale)

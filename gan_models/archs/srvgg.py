"""SRVGGNetCompact, the small Real-ESRGAN generator (realesr-general-x4v3, realesr-animevideov3).

A plain stack of 3x3 convs at low resolution, one PixelShuffle, and a nearest-upsampled copy of the input added
to the result, so the network only learns the residual. Keys: `body.{0,2,...,2*num_conv}` (convs),
`body.{1,3,...}` (PReLU slopes, one per channel; absent for relu/leakyrelu), `body.{2*num_conv+2}` (last conv).
With num_conv=32 that is `body.0`..`body.66`. Input RGB in [0, 1]; the output is not clamped (callers clip).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

ActType = Literal["prelu", "relu", "leakyrelu"]
ACT_TYPES: tuple[str, ...] = ("prelu", "relu", "leakyrelu")


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope=0.1, inplace=True)


class SRVGGNetCompact(nn.Module):
    """Compact VGG-style super-resolution net with a sub-pixel output and a nearest-neighbour input skip.

    Parameters:
        num_in_ch: channels of the input image.
        num_out_ch: channels of the output image.
        num_feat: feature width (64 in the published models).
        num_conv: hidden 3x3 convs between the first and the last (32 for realesr-general-x4v3, 16 for animevideo).
        upscale: output size / input size.
        act_type: "prelu" (published models), "relu" or "leakyrelu" (slope 0.1).
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: ActType = "prelu",
    ) -> None:
        super().__init__()
        if act_type not in ACT_TYPES:
            raise ValueError(f"unknown act_type {act_type!r}; valid: {', '.join(ACT_TYPES)}")
        if num_in_ch != num_out_ch:
            # The input is added to the output, so the channel counts must agree.
            raise ValueError(f"num_in_ch ({num_in_ch}) must equal num_out_ch ({num_out_ch})")
        if upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {upscale}")
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self.body:
            out = layer(out)  # last: (N, num_out_ch*upscale**2, H, W)
        out = self.upsampler(out)  # (N, num_out_ch, H*upscale, W*upscale)
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")  # (N, num_in_ch, H*upscale, W*upscale)
        return out + base

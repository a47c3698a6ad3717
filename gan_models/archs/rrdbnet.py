"""RRDBNet, the ESRGAN / Real-ESRGAN generator (Wang et al. 2018, 2021), in the basicsr key layout.

Keys: `conv_first`, `body.N.rdb{1,2,3}.conv{1..5}`, `conv_body`, `conv_up1`, `conv_up2` (`conv_up3` for x8, as in
ai-forever/Real-ESRGAN), `conv_hr`, `conv_last`. Input RGB in [0, 1]; the output is not clamped (callers clip).
For scale 2 and 1 the input is pixel-unshuffled first (x2 and x4), so the trunk always upsamples by 4 and the
checkpoint's `conv_first` has 4x or 16x the input channels, as basicsr does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..state_dict import unwrap_state_dict

RRDB_SCALES: tuple[int, ...] = (1, 2, 4, 8)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; residual scaled by 0.2.

    Parameters:
        num_feat: channels in and out.
        num_grow_ch: channels each of the first four convs adds.
    """

    def __init__(self, *, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        # Scaling the residual keeps a 69-layer-deep trunk stable without BatchNorm (ESRGAN, section 3.2).
        return x + 0.2 * x5


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer residual scaled by 0.2.

    Parameters:
        num_feat: channels in and out.
        num_grow_ch: growth channels of the dense blocks.
    """

    def __init__(self, *, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN generator: conv head, num_block RRDBs with a long skip, nearest-upsample + conv stages, conv tail.

    Parameters:
        num_in_ch: channels of the input image.
        num_out_ch: channels of the output image.
        num_feat: feature width (64 in the published models).
        num_block: RRDBs in the trunk (23 in the published models).
        num_grow_ch: growth channels of the dense blocks (32).
        scale: output size / input size: 1, 2, 4 or 8. For 1 and 2, H and W must be multiples of 4 and 2.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in RRDB_SCALES:
            raise ValueError(f"unsupported scale {scale}; valid: {', '.join(map(str, RRDB_SCALES))}")
        self.scale = scale
        # Scales below 4 trade resolution for channels up front so the x4 trunk gives the right output size.
        self._unshuffle = {1: 4, 2: 2}.get(scale, 1)
        self.conv_first = nn.Conv2d(num_in_ch * self._unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        if scale == 8:
            self.conv_up3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def _up(self, conv: nn.Module, feat: Tensor) -> Tensor:
        return self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))

    def forward(self, x: Tensor) -> Tensor:
        if self._unshuffle > 1:
            x = F.pixel_unshuffle(x, self._unshuffle)  # (N, C*r*r, H/r, W/r)
        feat = self.conv_first(x)  # (N, num_feat, h, w)
        feat = feat + self.conv_body(self.body(feat))  # (N, num_feat, h, w)
        feat = self._up(self.conv_up1, feat)  # (N, num_feat, 2h, 2w)
        feat = self._up(self.conv_up2, feat)  # (N, num_feat, 4h, 4w)
        if self.scale == 8:
            feat = self._up(self.conv_up3, feat)  # (N, num_feat, 8h, 8w)
        return self.conv_last(self.lrelu(self.conv_hr(feat)))  # (N, num_out_ch, H*scale, W*scale)


def esrgan_to_basicsr(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys of the original ESRGAN code (`model.0`, `model.1.sub.N.RDB1.conv1.0`, `model.3`, ...) renamed to ours.

    The old layout is one Sequential: conv_first, a shortcut block holding the RRDBs and conv_body, then per x2
    stage (Upsample, conv, LeakyReLU), then conv_hr, LeakyReLU, conv_last. Keys already in our layout pass through.
    """
    if "model.0.weight" not in state:
        return dict(state)
    tail = sorted({int(m[1]) for k in state if (m := re.match(r"model\.(\d+)\.weight$", k)) and m[1] != "0"})
    blocks = {m[1] for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))}
    if len(tail) < 2:
        return dict(state)
    *ups, hr, last = tail
    names = {"model.0": "conv_first", f"model.1.sub.{len(blocks)}": "conv_body"}
    names.update({f"model.{i}": f"conv_up{n}" for n, i in enumerate(ups, 1)})
    names.update({f"model.{hr}": "conv_hr", f"model.{last}": "conv_last"})
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        else:
            base, _, param = key.rpartition(".")
            out[f"{names.get(base, base)}.{param}"] = value
    return out


def rrdbnet_kwargs(state: Mapping[str, Tensor]) -> dict[str, int] | None:
    """RRDBNet constructor arguments read from a basicsr-layout state dict's shapes, or None if it is not one."""
    first = state.get("conv_first.weight")
    blocks = {k.split(".")[1] for k in state if k.startswith("body.") and ".rdb1.conv1.weight" in k}
    if first is None or "conv_last.weight" not in state or not blocks or "body.0.rdb1.conv1.weight" not in state:
        return None
    out_ch = state["conv_last.weight"].shape[0]
    # Scales 1 and 2 pixel-unshuffle the input by 4 and 2 (basicsr), so conv_first sees 16x or 4x the channels;
    # each conv_upN doubles. The scale is what the file does (an x2 file without unshuffle says x2, not x4).
    unshuffle = {1: 1, 4: 2, 16: 4}.get(first.shape[1] // out_ch, 1)
    ups = sum(f"conv_up{i}.weight" in state for i in (1, 2, 3))
    scale = max(1, 2**ups // unshuffle)
    return {"num_in_ch": first.shape[1] // unshuffle**2, "num_out_ch": out_ch, "num_feat": first.shape[0],
            "num_block": len(blocks), "num_grow_ch": state["body.0.rdb1.conv1.weight"].shape[0], "scale": scale}


def build_rrdbnet_from_esrgan(state_dict: Mapping[str, Tensor]) -> RRDBNet:
    """Our RRDBNet from an original-ESRGAN-layout state dict (numbers from its shapes), weights loaded strictly.

    `state_dict` is the checkpoint as read (wrappers and `module.` prefixes are removed here) or already unwrapped.
    """
    state = esrgan_to_basicsr(unwrap_state_dict(state_dict))
    kwargs = rrdbnet_kwargs(state)
    if kwargs is None:
        raise ValueError("not an ESRGAN RRDBNet state dict (no conv_first / RRDB keys)")
    model = RRDBNet(**kwargs)
    model.load_state_dict(state, strict=True)
    return model.float().eval()

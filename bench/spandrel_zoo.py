"""Small random-init checkpoints of spandrel's architectures, for running the runtime tournament on them.

    python -m bench.spandrel_zoo /tmp/zoo                    # writes /tmp/zoo/<name>.pth (params_ema wrapped)
    python -m export /tmp/zoo/*.pth -o /tmp/zoo-onnx --tournament

Each network is built from spandrel's own architecture class with random weights (narrow, so that a busy CPU
judges it in a minute) and saved as BasicSR-style trainers publish them: `torch.save({"params_ema": state_dict})`.
The tournament then exports each to ONNX, runs onnxruntime and OpenVINO next to torch, and records the winner
(docs/custom-models.md has the results measured on this project's CPU).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn


def _span() -> nn.Module:
    from spandrel.architectures.SPAN import SPAN

    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4)


def _swinir() -> nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(img_size=32, in_chans=3, embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=8,
                  mlp_ratio=2.0, upscale=2, upsampler="pixelshuffledirect", img_range=1.0)


def _scunet() -> nn.Module:
    from spandrel.architectures.SCUNet import SCUNet

    return SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=16)


def _nafnet() -> nn.Module:
    from spandrel.architectures.NAFNet import NAFNet

    return NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])


def _omnisr() -> nn.Module:
    from spandrel.architectures.OmniSR import OmniSR

    return OmniSR(num_in_ch=3, num_out_ch=3, num_feat=16, block_num=1, window_size=8, res_num=1, up_scale=2)


def _rcan() -> nn.Module:
    from spandrel.architectures.RCAN import RCAN

    return RCAN(scale=2, n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4)


def _esrgan_old_x2() -> nn.Module:
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=2)


ZOO: dict[str, Callable[[], nn.Module]] = {
    "span-x4": _span, "swinir-x2": _swinir, "scunet-x1": _scunet, "nafnet-x1": _nafnet, "omnisr-x2": _omnisr,
    "rcan-x2": _rcan, "esrgan-old-x2": _esrgan_old_x2,
}


def write_zoo(out: Path, names: Sequence[str] = tuple(ZOO)) -> list[Path]:
    """Write `out/<name>.pth` for each name (seeded random init) and return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        torch.manual_seed(0)
        path = out / f"{name}.pth"
        torch.save({"params_ema": ZOO[name]().state_dict()}, path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the .pth files")
    parser.add_argument("--only", nargs="+", choices=sorted(ZOO), default=list(ZOO))
    args = parser.parse_args(argv)
    for path in write_zoo(args.out, args.only):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

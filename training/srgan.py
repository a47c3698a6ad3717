"""SRGAN (Ledig et al. 2017): a pixel-L1 (SRResNet) phase, then VGG content + adversarial loss.

Data: a folder of HR photos; the LR inputs are bicubic downscales made on the fly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gan_models.evaluate import psnr, rgb_to_y, ssim
from gan_models.specs import ModelSpec

from . import TrainError
from .data import Data, Sampler, check_min_size, chw, read_folder, train_val
from .losses import VggContent
from .mode import GanMode
from .networks import srgan_classifier

if TYPE_CHECKING:
    from .config import TrainConfig


class SrganMode(GanMode):
    """G: the upscaler, D: SRGAN's classifier; Adam beta1 0.9 and the vanilla GAN loss, as in the paper."""

    name = "srgan"
    task = "upscale"
    default_model = "default-upscale-x4"
    crop, beta1, gan_loss = 128, 0.9, "vanilla"
    log_columns = ("pixel", "content", "g_adv", "d", "val_psnr", "val_ssim")
    metric_notes = {"val_psnr": "PSNR in dB on the Y channel against the HR photo (bicubic-downscaled input); "
                                "higher is better",
                    "val_ssim": "SSIM on the Y channel against the HR photo; higher is better (1 = identical)"}
    card_tags = ("super-resolution",)
    card_summary = "an SRGAN-style upscaler for photos"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.content: nn.Module | None = None
        if self.cfg.pretrain_steps < self.total:
            try:  # only from torchvision's local weights cache: training never downloads anything
                self.content = VggContent(self.spec.value_range).to(self.device)
            except (ImportError, OSError, RuntimeError):
                print(f"note: no VGG19 weights in torchvision's cache ({Path(torch.hub.get_dir()) / 'checkpoints'}); "
                      f"the content loss falls back to L1 on pixels", file=sys.stderr)

    @classmethod
    def load_data(cls, cfg: TrainConfig, spec: ModelSpec) -> Data:
        root, crop = Path(cfg.data), cfg.crop
        hr = read_folder(root)
        check_min_size(hr, crop, f"images in {root}")
        hr, held, note = train_val(hr, Path(cfg.val_data) if cfg.val_data else None, cfg.val_count)
        val = []
        for y in held:
            # Centre crop of at most 2 training crops: big enough to judge, small enough to validate often.
            side = min(min(y.shape[:2]), 2 * crop) // spec.scale * spec.scale
            top, left = (y.shape[0] - side) // 2, (y.shape[1] - side) // 2
            y = y[top:top + side, left:left + side]
            x = np.asarray(Image.fromarray(y).resize((side // spec.scale,) * 2, Image.Resampling.BICUBIC))
            val.append((chw(x), chw(y)))
        return Data(Sampler("sr", None, hr, crop=crop, scale=spec.scale), val, len(hr), note)

    @classmethod
    def check_crop(cls, crop: int, spec: ModelSpec) -> None:
        if crop % spec.scale or crop < 32:
            raise TrainError(f"--crop {crop}: the HR crop must be a multiple of the scale ({spec.scale}) and at "
                             f"least 32 px (the SRGAN discriminator's minimum)")

    def more_networks(self) -> dict[str, nn.Module]:
        return {"D": srgan_classifier(width=self.cfg.d_width, use_spectral_norm=self.cfg.spectral_norm)}

    def optimize(self, lr: Tensor, hr: Tensor) -> dict[str, Tensor]:
        """Pixel L1 only during --pretrain-steps; then D on (HR, SR), then G: content + adv_weight * adversarial."""
        with self.autocast():
            sr = self.nets["G"](lr)  # (N, 3, crop, crop) from (N, 3, crop/scale, crop/scale)
            pixel = F.l1_loss(sr.float(), hr)
        if self.step < self.cfg.pretrain_steps:  # SRResNet phase: a PSNR-oriented start for the GAN
            self.update(self.opt_g, self.scaler_g, pixel)
            return {"pixel": pixel}
        d = self.nets["D"]
        with self.autocast():
            loss_d = self.d_adv("D", hr, sr)
        self.update(self.opt_d, self.scaler_d, loss_d)
        d.requires_grad_(False)
        with self.autocast():
            content = self.content(sr, hr) if self.content is not None else pixel
            adv = self.g_adv("D", sr, hr)
            loss_g = content + self.cfg.adv_weight * adv
        self.update(self.opt_g, self.scaler_g, loss_g)
        d.requires_grad_(True)
        return {"pixel": pixel, "content": content, "g_adv": adv, "d": loss_d}

    def val_scores(self, x: Tensor, out: Tensor, target: Tensor) -> dict[str, float]:
        """PSNR and SSIM on the Y channel with a border of `scale` pixels cropped, as SR papers report them."""
        lo, hi = self.spec.value_range
        s = self.spec.scale
        ys = [rgb_to_y(((t - lo) / (hi - lo)).permute(1, 2, 0).numpy())[s:-s, s:-s] for t in (out, target)]
        return {"val_psnr": psnr(ys[0], ys[1], peak=255.0), "val_ssim": ssim(ys[0], ys[1])}

    @property
    def input_size(self) -> int | None:
        return self.spec.input_size  # an upscaler takes any size; its crop says nothing to users

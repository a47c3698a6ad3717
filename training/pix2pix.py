"""Pix2Pix (Isola et al. 2017): paired input → target with a conditional PatchGAN and an L1 term.

Data: side-by-side AB images or DIR/A + DIR/B matched by name; with --edges-from-photos, plain photos whose inputs
are the app's edge maps drawn with hand-drawing variation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gan_models import imaging
from gan_models.specs import ModelSpec

from .data import Data, Sampler, centre_view, check_min_size, chw, paired_banks, read_folder, train_val
from .mode import GanMode
from .networks import patchgan

if TYPE_CHECKING:
    from .config import TrainConfig


class Pix2PixMode(GanMode):
    """G: a U-Net (by default), D: a PatchGAN that judges (input, output) pairs; vanilla GAN loss + 100 * L1."""

    name = "pix2pix"
    task = "sketch2photo"
    default_model = "default-sketch"
    crop, beta1, gan_loss = 256, 0.5, "vanilla"
    log_columns = ("g_adv", "l1", "d", "val_l1")
    metric_notes = {"val_l1": "mean absolute difference between the output G(x) and the target y of validation "
                              "pairs, pixels in [0, 1]; lower is better"}
    card_tags = ("pix2pix", "sketch-to-image")
    card_summary = "a Pix2Pix generator that turns a drawing (or edge map) into a photo-like image"

    @classmethod
    def load_data(cls, cfg: TrainConfig, spec: ModelSpec) -> Data:
        root, crop, n_val = Path(cfg.data), cfg.crop, cfg.val_count
        val_root = Path(cfg.val_data) if cfg.val_data else None
        if cfg.edges_from_photos:
            photos = read_folder(root)
            check_min_size(photos, crop, f"photos in {root}")
            photos, held, note = train_val(photos, val_root, n_val)
            val = []
            for photo in held:  # clean edge maps, exactly what the app's helper makes
                y = centre_view(photo, crop)
                val.append((chw(np.asarray(imaging.edges_from_photo(Image.fromarray(y)))), chw(y)))
            return Data(Sampler("edges", None, photos, crop=crop, scale=1), val, len(photos), note)
        a, b = paired_banks(root, crop)
        if val_root is not None:
            va, vb = paired_banks(val_root, crop)
            n = min(n_val, len(va))
            held_a, held_b, note = [va[i] for i in range(n)], [vb[i] for i in range(n)], str(val_root)
        else:  # A and B have the same length, so both splits hold back the same pairs
            a, held_a, note = train_val(a, None, n_val)
            b, held_b, _ = train_val(b, None, n_val)
        if cfg.direction == "BtoA":
            a, b, held_a, held_b = b, a, held_b, held_a
        val = [(chw(centre_view(x, crop)), chw(centre_view(y, crop))) for x, y in zip(held_a, held_b, strict=True)]
        return Data(Sampler("paired", a, b, crop=crop, scale=1), val, len(a), note)

    def more_networks(self) -> dict[str, nn.Module]:
        # D judges (input, output) pairs: 6 channels
        return {"D": patchgan(in_channels=6, width=self.cfg.d_width, use_spectral_norm=self.cfg.spectral_norm)}

    def optimize(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """D on (x, y) against (x, G(x)), then G with D frozen: adversarial + lambda_l1 * L1, as in the paper."""
        d = self.nets["D"]
        with self.autocast():
            fake = self.nets["G"](x)
            loss_d = self.d_adv("D", torch.cat([x, y], 1), torch.cat([x, fake], 1))  # (N, 6, crop, crop)
        self.update(self.opt_d, self.scaler_d, loss_d)
        d.requires_grad_(False)
        with self.autocast():
            adv = self.g_adv("D", torch.cat([x, fake], 1), torch.cat([x, y], 1))
            l1 = F.l1_loss(fake.float(), y)
            loss_g = adv + self.cfg.lambda_l1 * l1
        self.update(self.opt_g, self.scaler_g, loss_g)
        d.requires_grad_(True)
        return {"g_adv": adv, "l1": l1, "d": loss_d}

    def val_scores(self, x: Tensor, out: Tensor, target: Tensor) -> dict[str, float]:
        lo, hi = self.spec.value_range
        return {"val_l1": float((out - target).abs().mean()) / (hi - lo)}  # in [0, 1] units

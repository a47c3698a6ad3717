"""CycleGAN (Zhu et al. 2017): unpaired A → B with a B → A generator, cycle and identity losses.

Data: DIR/trainA + DIR/trainB; validation: --val-data (DIR/testA or a folder of A images) or held-back A images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_models.specs import ModelSpec
from gan_models.weights import build_generator, save_model_folder

from .data import Data, Sampler, centre_view, check_min_size, chw, read_folder, train_val
from .losses import ImagePool
from .mode import GanMode
from .networks import patchgan

if TYPE_CHECKING:
    from .config import TrainConfig


class CycleGanMode(GanMode):
    """G: A → B, G_B: B → A, D_A and D_B PatchGANs; least-squares GAN loss and an image pool, as in the paper."""

    name = "cyclegan"
    task = "style"
    default_model = "default-style"
    crop, beta1, gan_loss = 256, 0.5, "lsgan"
    log_columns = ("g_adv", "cycle", "identity", "d", "val_cycle_l1")
    metric_notes = {"val_cycle_l1": "mean absolute difference between a validation photo a and its reconstruction "
                                    "G_B(G(a)), pixels in [0, 1]; lower is better"}
    card_tags = ("cyclegan", "style-transfer")
    published_folders = {"reverse": ("final_reverse", "the reverse generator (domain B to A), a model of its own")}
    card_summary = ("a CycleGAN generator that turns photos (domain A) into the style of domain B, learnt from "
                    "unpaired images")

    @classmethod
    def load_data(cls, cfg: TrainConfig, spec: ModelSpec) -> Data:
        root, crop = Path(cfg.data), cfg.crop
        a, b = read_folder(root / "trainA"), read_folder(root / "trainB")
        check_min_size(a, crop, f"images in {root / 'trainA'}")
        check_min_size(b, crop, f"images in {root / 'trainB'}")
        val_root = Path(cfg.val_data) if cfg.val_data else None
        if val_root is not None and (val_root / "testA").is_dir():
            val_root = val_root / "testA"
        a, held, note = train_val(a, val_root, cfg.val_count)
        val = [(chw(x), chw(x)) for x in (centre_view(h, crop) for h in held)]  # the target is unused
        return Data(Sampler("unpaired", a, b, crop=crop, scale=1), val, len(a), note)

    def more_networks(self) -> dict[str, nn.Module]:
        c = self.cfg
        return {"G_B": build_generator(self.spec),
                "D_A": patchgan(in_channels=3, width=c.d_width, use_spectral_norm=c.spectral_norm),
                "D_B": patchgan(in_channels=3, width=c.d_width, use_spectral_norm=c.spectral_norm)}

    def image_pools(self) -> dict[str, ImagePool]:
        return {"A": ImagePool(self.cfg.pool_size), "B": ImagePool(self.cfg.pool_size)}

    def optimize(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Generators first (the discriminators frozen), then both discriminators on pooled fakes, as in the paper."""
        g_ab, g_ba, c = self.nets["G"], self.nets["G_B"], self.cfg
        for name in ("D_A", "D_B"):
            self.nets[name].requires_grad_(False)
        with self.autocast():
            fake_b, fake_a = g_ab(a), g_ba(b)  # (N, 3, crop, crop) each
            cycle = F.l1_loss(g_ba(fake_b).float(), a) + F.l1_loss(g_ab(fake_a).float(), b)
            identity = (F.l1_loss(g_ab(b).float(), b) + F.l1_loss(g_ba(a).float(), a)
                        if c.lambda_identity > 0 else a.new_zeros(()))
            adv = self.g_adv("D_B", fake_b, b) + self.g_adv("D_A", fake_a, a)
            loss_g = adv + c.lambda_cycle * (cycle + c.lambda_identity * identity)
        self.update(self.opt_g, self.scaler_g, loss_g)
        for name in ("D_A", "D_B"):
            self.nets[name].requires_grad_(True)
        with self.autocast():
            loss_d = (self.d_adv("D_B", b, self.pools["B"].query(fake_b.float(), self.rng))
                      + self.d_adv("D_A", a, self.pools["A"].query(fake_a.float(), self.rng)))
        self.update(self.opt_d, self.scaler_d, loss_d)
        return {"g_adv": adv, "cycle": cycle, "identity": identity, "d": loss_d}

    def val_target(self, out: Tensor, y8: Tensor) -> Tensor:
        """The reconstruction G_B(G(a)): unpaired data has no target, so validation measures the cycle."""
        lo, hi = self.spec.value_range
        return self.nets["G_B"](out).float().clamp(lo, hi)

    def val_scores(self, x: Tensor, out: Tensor, target: Tensor) -> dict[str, float]:
        lo, hi = self.spec.value_range
        return {"val_cycle_l1": float((target - x).abs().mean()) / (hi - lo)}  # in [0, 1] units

    def save_generators(self, out: Path, fields: dict[str, Any], dtype: torch.dtype) -> Path:
        """final/ (A → B) and final_reverse/ (the B → A generator, a model of its own)."""
        final = super().save_generators(out, fields, dtype)
        reverse = {**fields, "id": f"{fields['id']}-reverse", "title": f"{fields['id']} B→A (train.py)"}
        save_model_folder(self.nets["G_B"], out / "final_reverse", spec_fields=reverse, dtype=dtype)
        return final

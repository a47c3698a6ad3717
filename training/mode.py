"""GanMode: what the three modes share; each mode is one subclass (cyclegan.py, pix2pix.py, srgan.py).

A mode owns its networks, optimisers, losses, data, validation metric, log columns and saved generators, like a
model class in junyanz/pytorch-CycleGAN-and-pix2pix (models/base_model.py), but with explicit typed arguments
instead of one options object. The Trainer (trainer.py) runs the loop around it.
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gan_models.specs import ModelSpec
from gan_models.weights import save_model_folder

from . import TrainError
from .data import Data
from .distributed import Ranks, sync_batch_norm
from .losses import FeatureTap, GanLoss, ImagePool, gradient_penalty

if TYPE_CHECKING:
    from .config import TrainConfig


@dataclass(frozen=True)
class Precision:
    """Autocast settings of a run: fp16 also needs loss scaling, bf16 does not."""

    device_type: str
    enabled: bool
    dtype: torch.dtype

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    @property
    def loss_scaling(self) -> bool:
        return self.enabled and self.dtype == torch.float16


class GanMode:
    """One training mode: its defaults, networks, data, optimisation step, validation metric and outputs.

    A subclass sets the class attributes and implements `load_data`, `more_networks`, `optimize` and `val_scores`.
    Networks whose name starts with "G" are trained by the generator optimiser, "D..." by the discriminator's.

    Parameters:
        cfg: the run's options (lambdas, stabilisers, learning rates).
        spec: the generator's spec (architecture, value range, scale).
        generator: the generator to train ("G"), initialised or loaded from --init.
        data: the mode's training sampler and validation pairs, from `load_data`.
        total: the step the run ends at (instance noise fades to 0 there).
        device: where the networks live.
        precision: autocast settings.
        rng: the run's Python random generator (saved in checkpoints); modes draw from it, never from `random`.
    """

    name: ClassVar[str]
    task: ClassVar[str]  # the gan_models task of the trained generator
    default_model: ClassVar[str]  # bundled spec whose architecture is trained without --model/--init
    crop: ClassVar[int]  # the papers' defaults for --crop, --beta1 and --gan-loss
    beta1: ClassVar[float]
    gan_loss: ClassVar[str]
    log_columns: ClassVar[tuple[str, ...]]  # losses from `optimize`, then scores from `val_scores`
    metric_notes: ClassVar[dict[str, str]]  # what each validation score measures, for the model card
    card_tags: ClassVar[tuple[str, ...]]  # Hub tags besides "gan" and "image-to-image"
    card_summary: ClassVar[str]  # what the trained model does, for its model card
    # other generators save_generators writes: {subfolder in the Hub repo: (folder in the run, what it is)}
    published_folders: ClassVar[dict[str, tuple[str, str]]] = {}
    ranks: Ranks = Ranks()  # the Trainer's, under torchrun: gradients are averaged across them

    def __init__(self, *, cfg: TrainConfig, spec: ModelSpec, generator: nn.Module, data: Data, total: int,
                 device: str, precision: Precision, rng: random.Random) -> None:
        self.cfg, self.spec, self.data, self.total = cfg, spec, data, total
        self.device, self.precision, self.rng = device, precision, rng
        self.step = 0
        self.nets: dict[str, nn.Module] = sync_batch_norm({"G": generator, **self.more_networks()}, device)
        self.pools: dict[str, ImagePool] = self.image_pools()
        memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for net in self.nets.values():
            net.to(device, memory_format=memory).train()
        g_params = [p for k, n in self.nets.items() if k.startswith("G") for p in n.parameters()]
        d_params = [p for k, n in self.nets.items() if k.startswith("D") for p in n.parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=cfg.lr_d or cfg.lr, betas=(cfg.beta1, 0.999))
        # one scaler per optimiser because G's and D's gradients differ in size
        device_type = torch.device(device).type
        self.scaler_g = torch.amp.GradScaler(device_type, enabled=precision.loss_scaling)
        self.scaler_d = torch.amp.GradScaler(device_type, enabled=precision.loss_scaling)
        self.gan = GanLoss(cfg.gan_loss, cfg.label_smoothing)
        self.taps = {k: FeatureTap(n) for k, n in self.nets.items() if k.startswith("D")}

    # --- what each mode defines
    @classmethod
    def load_data(cls, cfg: TrainConfig, spec: ModelSpec) -> Data:
        """Read and check cfg.data (and cfg.val_data) in this mode's layout."""
        raise NotImplementedError

    @classmethod
    def check_crop(cls, crop: int, spec: ModelSpec) -> None:
        if crop % spec.size_multiple:
            raise TrainError(f"--crop {crop} must be a multiple of {spec.size_multiple} for {spec.arch} "
                             f"{dict(spec.arch_kwargs)}")

    def more_networks(self) -> dict[str, nn.Module]:
        """The networks besides G, built in this order (the order fixes how they draw from the seeded RNG)."""
        raise NotImplementedError

    def image_pools(self) -> dict[str, ImagePool]:
        return {}

    def optimize(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One optimisation step on a batch; returns the losses as tensors (nothing waits for the GPU)."""
        raise NotImplementedError

    def val_target(self, out: Tensor, y8: Tensor) -> Tensor:
        """What the validation output is compared with: the target image (cyclegan: a reconstruction)."""
        return self.prep(y8[None])

    def val_scores(self, x: Tensor, out: Tensor, target: Tensor) -> dict[str, float]:
        """The validation metric of one (input, output, target) triple in the model's range."""
        raise NotImplementedError

    @property
    def input_size(self) -> int | None:
        """The training resolution written into final/config.json (the app sizes the sketch canvas by it)."""
        return self.cfg.crop

    def save_generators(self, out: Path, fields: dict[str, Any], dtype: torch.dtype) -> Path:
        """final/: G as model.safetensors + config.json, a spec gan_models loads; returns the folder."""
        return save_model_folder(self.nets["G"], out / "final", spec_fields=fields, dtype=dtype)

    # --- shared by the modes
    def train_step(self, x8: Tensor, y8: Tensor, *, step: int) -> dict[str, Tensor]:
        """One step on a uint8 batch from the data loader; `step` counts the steps done before this one."""
        self.step = step
        return self.optimize(self.prep(x8), self.prep(y8))

    def prep(self, x: Tensor) -> Tensor:
        """uint8 (N, 3, H, W) on the CPU → float in the model's value range on the device."""
        lo, hi = self.spec.value_range
        x = x.to(self.device, non_blocking=True).float().mul_((hi - lo) / 255.0).add_(lo)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def autocast(self) -> AbstractContextManager:
        return self.precision.autocast()

    def noise(self, x: Tensor) -> Tensor:
        """Instance noise (Sønderby et al.): blurs D's view early on, fading to nothing by the last step."""
        sigma = self.cfg.instance_noise * max(0.0, 1.0 - self.step / max(1, self.total))
        return x + sigma * torch.randn_like(x) if sigma > 0 else x

    def d_adv(self, name: str, real: Tensor, fake: Tensor) -> Tensor:
        """Discriminator `name`'s loss on a real and a (detached) fake batch."""
        d = self.nets[name]
        loss = self.gan.d_loss(d(self.noise(real)), d(self.noise(fake.detach())))
        if self.gan.kind == "wgangp":
            with torch.autocast(self.precision.device_type, enabled=False):
                loss = loss + gradient_penalty(d, real, fake.detach())
        return loss

    def g_adv(self, name: str, fake: Tensor, real: Tensor) -> Tensor:
        """The generator's adversarial loss against discriminator `name`, plus feature matching when asked."""
        d = self.nets[name]
        if self.cfg.feature_matching <= 0:
            return self.gan.g_loss(d(self.noise(fake)))
        pred, f_fake = self.taps[name].run(d, self.noise(fake))
        with torch.no_grad():
            _, f_real = self.taps[name].run(d, self.noise(real))
        fm = sum(F.l1_loss(a.float().mean(0), b.float().mean(0)) for a, b in zip(f_fake, f_real, strict=True))
        return self.gan.g_loss(pred) + self.cfg.feature_matching * fm

    def update(self, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        self.ranks.average_gradients(p for g in opt.param_groups for p in g["params"])
        if self.cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()

    def set_learning_rates(self, factor: float) -> None:
        """Both learning rates at `factor` times their configured values (the Trainer's schedule)."""
        for opt, base in ((self.opt_g, self.cfg.lr), (self.opt_d, self.cfg.lr_d or self.cfg.lr)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    # --- validation and samples
    @torch.no_grad()
    def run_val(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(input, output, target) per validation pair, in the model's range on the CPU."""
        lo, hi = self.spec.value_range
        generators = [n for k, n in self.nets.items() if k.startswith("G")]
        for net in generators:
            net.eval()
        triples = []
        with self.autocast():
            for x8, y8 in self.data.val:
                x = self.prep(x8[None])
                out = self.nets["G"](x).float().clamp(lo, hi)
                target = self.val_target(out, y8)
                triples.append((x[0].float().cpu(), out[0].cpu(), target[0].float().cpu()))
        for net in generators:
            net.train()
        return triples

    def validate(self) -> dict[str, float]:
        """The mean of `val_scores` over the validation images."""
        scores: dict[str, list[float]] = {}
        for triple in self.run_val():
            for k, v in self.val_scores(*triple).items():
                scores.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    def sample_grid(self) -> Image.Image:
        """One row per validation image: input | output | target, each scaled to the target's size."""
        lo, hi = self.spec.value_range
        rows = []
        for triple in self.run_val():
            h, w = triple[2].shape[1:]
            rows.append(torch.cat([F.interpolate(t[None], size=(h, w), mode="nearest")[0] for t in triple], dim=2))
        width = max(r.shape[2] for r in rows)
        grid = torch.cat([F.pad(r, (0, width - r.shape[2]), value=hi) for r in rows], dim=1)
        arr = ((grid - lo) / (hi - lo)).clamp(0, 1).permute(1, 2, 0).numpy()
        return Image.fromarray((arr * 255 + 0.5).astype(np.uint8))

    # --- checkpoints: plain tensors only, so torch.load(weights_only=True) reads them
    def state(self) -> dict[str, Any]:
        return {
            "nets": {k: n.state_dict() for k, n in self.nets.items()},
            "optimizers": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "scalers": {"G": self.scaler_g.state_dict(), "D": self.scaler_d.state_dict()},
            "pools": {k: torch.stack(p.images) if p.images else torch.empty(0) for k, p in self.pools.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(state["nets"][k])
        self.opt_g.load_state_dict(state["optimizers"]["G"])
        self.opt_d.load_state_dict(state["optimizers"]["D"])
        for scaler, saved in ((self.scaler_g, state["scalers"]["G"]), (self.scaler_d, state["scalers"]["D"])):
            if saved and scaler.is_enabled():  # empty when the run had no fp16 loss scaling
                scaler.load_state_dict(saved)
        for k, images in state["pools"].items():
            self.pools[k].images = [img.to(self.device) for img in images]

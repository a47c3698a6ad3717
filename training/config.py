"""TrainConfig: everything a run depends on, saved next to every checkpoint so a run can be reproduced and resumed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import TrainError
from .modes import MODES

# Options that define the networks: a checkpoint fixes them, so --resume refuses different values.
ARCH_FIELDS = ("mode", "model", "arch_kwargs", "init", "d_width", "spectral_norm", "edges_from_photos", "direction")


@dataclass
class TrainConfig:
    """Everything a run depends on. Saved next to every checkpoint, so a run can be reproduced and resumed.

    None means "the mode's default" for crop, beta1 and gan_loss (filled in by __post_init__ from the mode's
    class), "same as lr" for lr_d, and "pick for this machine" for workers.
    """

    mode: str
    data: str | None = None
    val_data: str | None = None
    val_count: int = 4
    out: str = "runs/train"
    name: str | None = None
    direction: str = "AtoB"
    edges_from_photos: bool = False
    model: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    init: str | None = None
    d_width: int = 64
    steps: int = 10_000
    epochs: int | None = None
    batch_size: int = 4
    crop: int | None = None
    lr: float = 2e-4
    lr_d: float | None = None
    beta1: float | None = None
    decay_from: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    amp_dtype: str = "bf16"
    channels_last: bool = False
    workers: int | None = None
    max_minutes: float | None = None
    gan_loss: str | None = None
    label_smoothing: float = 1.0
    instance_noise: float = 0.0
    spectral_norm: bool = False
    feature_matching: float = 0.0
    grad_clip: float | None = None
    lambda_l1: float = 100.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    pretrain_steps: int = 1000
    adv_weight: float = 1e-3
    sample_every: int = 500
    val_every: int = 500
    save_every: int = 500
    log_every: int = 10
    export_fp16: bool = False
    push_to_hub: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TrainError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        mode = MODES[self.mode]
        self.crop = self.crop if self.crop is not None else mode.crop
        self.beta1 = self.beta1 if self.beta1 is not None else mode.beta1
        self.gan_loss = self.gan_loss or mode.gan_loss
        positive = ("steps", "batch_size", "crop", "val_count", "sample_every", "val_every", "save_every", "log_every")
        bad = [f"--{k.replace('_', '-')} {getattr(self, k)}" for k in positive if getattr(self, k) < 1]
        if self.epochs is not None and self.epochs < 1:
            bad.append(f"--epochs {self.epochs}")
        if bad:
            raise TrainError(f"{', '.join(bad)}: must be at least 1")

"""Train or fine-tune the studio's generators on your own images: CycleGAN, Pix2Pix and SRGAN in one readable file.

    python train.py cyclegan --data DIR --out runs/style       # DIR/trainA (photos), DIR/trainB (paintings)
    python train.py pix2pix  --data DIR --out runs/sketch      # side-by-side AB images, or DIR/A + DIR/B by name
    python train.py pix2pix  --data photos/ --edges-from-photos --out runs/sketch   # edge maps made on the fly
    python train.py srgan    --data hr_photos/ --out runs/x4   # LR made by bicubic /4 on the fly
    python train.py srgan    --data hr/ --init realesrgan-x4 --out runs/ft   # start from any model's weights
    python train.py srgan    --out runs/x4 --resume            # go on exactly where a run stopped
    python train.py srgan    --out runs/x4 --resume --steps 20000            # ... or train it for longer

Every run writes into --out: `checkpoint.pt` (written atomically, read back with torch.load(weights_only=True)) and
`train_config.json`, `log.csv` (losses and validation), `samples/` (input | output | target grids) and at the end
`final/` = model.safetensors + config.json, which `python app.py --weights runs/x4`, the CLI and
`gan_models.get_spec("runs/x4")` load directly (CycleGAN also writes `final_reverse/`, the B→A generator). Ctrl-C or
SIGTERM finishes the current step, saves a checkpoint and final/, and exits; `--resume` continues with the same
weights, optimisers, step, random state and data order. Bad data (missing or empty folders, unreadable or too small
images, unmatched pairs) stops the run before training with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.data import DataLoader, Dataset

from gan_models import imaging
from gan_models.archs import build_arch
from gan_models.errors import GanModelsError
from gan_models.evaluate import psnr, rgb_to_y, ssim
from gan_models.files import atomic_write
from gan_models.runtimes import tune_malloc
from gan_models.specs import SPECS, ModelSpec, get_spec
from gan_models.weights import build_generator, load_with_fallback, save_model_folder

MODES = ("cyclegan", "pix2pix", "srgan")
TASK_OF_MODE = {"cyclegan": "style", "pix2pix": "sketch2photo", "srgan": "upscale"}
DEFAULT_MODEL = {"cyclegan": "default-style", "pix2pix": "default-sketch", "srgan": "default-upscale-x4"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
RAM_CACHE_BYTES = 2 * 2**30  # decoded datasets up to this size stay in RAM, so workers never decode a file twice
CHECKPOINT_FORMAT = "train.py/1"
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # the name torchvision's weights cache uses for VGG19_Weights.IMAGENET1K_V1
# Options that define the networks: a checkpoint fixes them, so --resume refuses different values.
ARCH_FIELDS = ("mode", "model", "arch_kwargs", "init", "d_width", "spectral_norm", "edges_from_photos", "direction")
LOG_COLUMNS = {
    "cyclegan": ["g_adv", "cycle", "identity", "d", "val_cycle_l1"],
    "pix2pix": ["g_adv", "l1", "d", "val_l1"],
    "srgan": ["pixel", "content", "g_adv", "d", "val_psnr", "val_ssim"],
}


class TrainError(GanModelsError):
    """Unusable data, options or checkpoint; `main` prints the message on one line and exits with code 2."""


@dataclass
class TrainConfig:
    """Everything a run depends on. Saved next to every checkpoint, so a run can be reproduced and resumed.

    None means "the mode's default" for crop, beta1 and gan_loss (filled in by __post_init__), "same as lr" for
    lr_d, and "pick for this machine" for workers.
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
        # The papers' choices: 256 crops for CycleGAN/Pix2Pix; SRGAN trains on small HR crops with Adam beta1 0.9
        # and the vanilla (BCE) GAN loss; CycleGAN uses least squares; Pix2Pix the vanilla conditional GAN loss.
        self.crop = self.crop if self.crop is not None else (128 if self.mode == "srgan" else 256)
        self.beta1 = self.beta1 if self.beta1 is not None else (0.9 if self.mode == "srgan" else 0.5)
        self.gan_loss = self.gan_loss or {"cyclegan": "lsgan", "pix2pix": "vanilla", "srgan": "vanilla"}[self.mode]
        positive = ("steps", "batch_size", "crop", "val_count", "sample_every", "val_every", "save_every", "log_every")
        bad = [f"--{k.replace('_', '-')} {getattr(self, k)}" for k in positive if getattr(self, k) < 1]
        if self.epochs is not None and self.epochs < 1:
            bad.append(f"--epochs {self.epochs}")
        if bad:
            raise TrainError(f"{', '.join(bad)}: must be at least 1")


# ---- command line ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Every option defaults to None so that `main` can tell what was given (which matters for --resume)."""
    d = TrainConfig(mode="pix2pix")

    def dflt(name: str) -> str:
        return f" (default: {getattr(d, name)})"

    p = argparse.ArgumentParser(prog="python train.py", description=__doc__.split("\n\n")[0],
                                epilog="Layouts, stabilisers and examples: see the top of train.py and the README.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=MODES)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", help="cyclegan: DIR/trainA + DIR/trainB; pix2pix: side-by-side AB images or DIR/A + "
                                  "DIR/B (same file names); --edges-from-photos and srgan: a folder of photos")
    g.add_argument("--val-data", help="validation images, same layout (cyclegan: DIR/testA or a folder of A images); "
                                      "default: hold back the last --val-count training images")
    g.add_argument("--val-count", type=int, help="images used for validation and sample grids" + dflt("val_count"))
    g.add_argument("--out", help="run folder: checkpoint.pt, log.csv, samples/, final/" + dflt("out"))
    g.add_argument("--name", help="model id written into final/config.json (default: the --out folder's name)")
    g.add_argument("--direction", choices=("AtoB", "BtoA"), help="pix2pix: which side is the input" + dflt("direction"))
    g.add_argument("--edges-from-photos", action="store_true", default=None,
                   help="pix2pix: --data holds plain photos; inputs are the app's edges_from_photo maps with "
                        "hand-drawing variation (stroke width, wobble, gaps, blur)")
    g.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                   help="continue from OUT/checkpoint.pt (or the given file); options given now override the "
                        "saved ones, except those that define the networks")
    g.add_argument("--export-fp16", action="store_true", default=None, help="write final/ in fp16 (half the size)")
    g.add_argument("--push-to-hub", metavar="REPO", help="upload final/ to this Hub model repo (needs a token)")
    m = p.add_argument_group("model")
    m.add_argument("--model", "--arch-preset", dest="model", metavar="MODEL_ID",
                   help="spec (id or train.py output folder) whose architecture to train; default: default-style "
                        "(cyclegan), default-sketch (pix2pix), default-upscale-x4 (srgan)")
    m.add_argument("--arch-kwargs", type=json.loads, metavar="JSON",
                   help='override architecture arguments, e.g. \'{"ngf": 16}\'')
    m.add_argument("--init", metavar="MODEL_ID",
                   help="start from this model's weights (spec id, train.py output folder); default: from scratch")
    m.add_argument("--d-width", type=int, help="discriminator width (ndf / SRGAN channels)" + dflt("d_width"))
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, help="optimizer steps" + dflt("steps"))
    o.add_argument("--epochs", type=int, help="passes over the training images (replaces --steps)")
    o.add_argument("--batch-size", type=int, help="images per step" + dflt("batch_size"))
    o.add_argument("--crop", type=int, help="training crop in output pixels (default: 256; srgan: 128)")
    o.add_argument("--lr", type=float, help="generator learning rate" + dflt("lr"))
    o.add_argument("--lr-d", type=float, help="discriminator learning rate (two time-scale updates, TTUR); "
                                              "default: --lr")
    o.add_argument("--beta1", type=float, help="Adam beta1 (default: 0.5; srgan: 0.9)")
    o.add_argument("--decay-from", type=float, help="learning rates fall linearly to 0 from this fraction of the "
                                                    "steps on, as in CycleGAN/Pix2Pix" + dflt("decay_from"))
    o.add_argument("--seed", type=int, help="seed for weights, crops and augmentation" + dflt("seed"))
    o.add_argument("--device", help="auto | cpu | cuda | cuda:N" + dflt("device"))
    o.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision autocast (default: on for CUDA, off on CPU)")
    o.add_argument("--amp-dtype", choices=("bf16", "fp16"),
                   help="autocast type; fp16 adds a GradScaler" + dflt("amp_dtype"))
    o.add_argument("--channels-last", action="store_true", default=None, help="channels-last memory format (GPU)")
    o.add_argument("--workers", type=int, help="data loader processes (default: CPU cores - 1, at most 16)")
    o.add_argument("--max-minutes", type=float, help="stop cleanly (checkpoint + final/) after this much wall time")
    s = p.add_argument_group("losses and stabilisers (defaults follow the papers)")
    s.add_argument("--gan-loss", choices=("lsgan", "vanilla", "hinge", "wgangp"),
                   help="adversarial loss (default: lsgan for cyclegan, vanilla BCE for pix2pix and srgan)")
    s.add_argument("--label-smoothing", type=float,
                   help="one-sided: D's target for real images, 0.9 is usual (lsgan/vanilla)" + dflt("label_smoothing"))
    s.add_argument("--instance-noise", type=float, metavar="SIGMA",
                   help="std of Gaussian noise on D's inputs, decaying linearly to 0" + dflt("instance_noise"))
    s.add_argument("--spectral-norm", action="store_true", default=None,
                   help="spectral normalisation on D's layers (PatchGAN then drops its norm layers)")
    s.add_argument("--feature-matching", type=float, metavar="W",
                   help="weight of a feature-matching loss on D's activations for G" + dflt("feature_matching"))
    s.add_argument("--grad-clip", type=float, metavar="NORM", help="clip G's and D's gradient norms")
    s.add_argument("--lambda-l1", type=float, help="pix2pix: L1 weight" + dflt("lambda_l1"))
    s.add_argument("--lambda-cycle", type=float, help="cyclegan: cycle weight" + dflt("lambda_cycle"))
    s.add_argument("--lambda-identity", type=float,
                   help="cyclegan: identity weight, times the cycle weight" + dflt("lambda_identity"))
    s.add_argument("--pool-size", type=int, help="cyclegan: history of fakes shown to D" + dflt("pool_size"))
    s.add_argument("--pretrain-steps", type=int,
                   help="srgan: pixel-L1 steps before the adversarial phase (>= --steps: a PSNR model)"
                        + dflt("pretrain_steps"))
    s.add_argument("--adv-weight", type=float, help="srgan: adversarial loss weight" + dflt("adv_weight"))
    e = p.add_argument_group("monitoring")
    e.add_argument("--sample-every", type=int, help="write a sample grid every N steps" + dflt("sample_every"))
    e.add_argument("--val-every", type=int, help="validate every N steps" + dflt("val_every"))
    e.add_argument("--save-every", type=int, help="write checkpoint.pt every N steps" + dflt("save_every"))
    e.add_argument("--log-every", type=int, help="log.csv row of mean losses every N steps" + dflt("log_every"))
    return p


def explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user gave on the command line."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


# ---- data -----------------------------------------------------------------------------------------------------

class ImageBank:
    """The images of one folder, decoded once into RAM (uint8 HxWx3) when they fit, else decoded per sample.

    `half` views side-by-side AB files as their left or right half.
    """

    def __init__(self, files: list[Path], full_sizes: list[tuple[int, int]], arrays: list[np.ndarray] | None,
                 half: str | None = None) -> None:
        self.files, self.full_sizes, self.arrays, self.half = files, full_sizes, arrays, half

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(w, h) of what __getitem__ returns."""
        return [(w // 2, h) for w, h in self.full_sizes] if self.half else self.full_sizes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        arr = self.arrays[i] if self.arrays is not None else decode(self.files[i])
        if self.half:
            w = arr.shape[1] // 2
            arr = arr[:, :w] if self.half == "left" else arr[:, w:2 * w]
        return arr

    def halves(self) -> tuple[ImageBank, ImageBank]:
        return (ImageBank(self.files, self.full_sizes, self.arrays, "left"),
                ImageBank(self.files, self.full_sizes, self.arrays, "right"))

    def subset(self, idx: list[int]) -> ImageBank:
        arrays = [self.arrays[i] for i in idx] if self.arrays is not None else None
        return ImageBank([self.files[i] for i in idx], [self.full_sizes[i] for i in idx], arrays, self.half)


def decode(path: Path) -> np.ndarray:
    """Any image mode (16-bit, CMYK, palette, EXIF-rotated) → uint8 RGB, through the app's own loader."""
    rgb, _alpha, _meta = imaging.split_image(imaging.load_image(path))
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def read_folder(folder: Path) -> ImageBank:
    """List and check a folder's images; decode them all now when they fit in RAM_CACHE_BYTES."""
    if not folder.is_dir():
        raise TrainError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TrainError(f"{folder} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    sizes, bad = [], []
    for path in files:  # headers only: cheap, and enough to decide whether everything fits in RAM
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            bad.append(f"{path.name} ({type(exc).__name__})")
    if not bad and sum(w * h * 3 for w, h in sizes) > RAM_CACHE_BYTES:
        return ImageBank(files, sizes, None)
    arrays = []
    for path in files:
        try:
            arrays.append(decode(path))
        except GanModelsError as exc:
            bad.append(f"{path.name} ({exc})")
    if bad:
        raise TrainError(f"unreadable images in {folder}: {'; '.join(sorted(set(bad)))}")
    return ImageBank(files, [(a.shape[1], a.shape[0]) for a in arrays], arrays)


def check_min_size(bank: ImageBank, side: int, what: str) -> None:
    small = [f"{f.name} ({w}x{h})" for f, (w, h) in zip(bank.files, bank.sizes, strict=True) if min(w, h) < side]
    if small:
        raise TrainError(f"{what} smaller than the {side}px crop: {', '.join(small)}; "
                         f"use a smaller --crop or remove them")


def random_view(rng: random.Random, arrays: list[np.ndarray], crop: int, *, rescale: bool) -> list[np.ndarray]:
    """The same random crop (and flip) of aligned arrays; with `rescale`, a random zoom first.

    The zoom makes the short side somewhere in [crop, 2*crop], so a crop shows between the whole image and a
    quarter of it. Only the window is resized, never the whole image: cheap enough to run per sample.
    """
    h, w = arrays[0].shape[:2]
    win = crop
    if rescale and min(h, w) > crop:
        win = round(crop * min(h, w) / rng.uniform(crop, min(min(h, w), 2 * crop)))
    top, left = rng.randint(0, h - win), rng.randint(0, w - win)
    flip = rng.random() < 0.5
    out = []
    for a in arrays:
        a = a[top:top + win, left:left + win]
        if win != crop:
            a = np.asarray(Image.fromarray(a).resize((crop, crop), Image.Resampling.BICUBIC))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


def centre_view(arr: np.ndarray, size: int) -> np.ndarray:
    """Short side resized to `size`, centre square: how the app feeds a photo to a 256 px model."""
    h, w = arr.shape[:2]
    f = size / min(h, w)
    img = Image.fromarray(arr).resize((max(size, round(w * f)), max(size, round(h * f))), Image.Resampling.BICUBIC)
    top, left = (img.height - size) // 2, (img.width - size) // 2
    return np.asarray(img)[top:top + size, left:left + size]


def chw(arr: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) → uint8 (3, H, W); workers ship uint8 (4x less to copy), the GPU makes floats."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def sketchy_edges(photo: np.ndarray, rng: random.Random) -> np.ndarray:
    """The app's edge map of `photo`, varied like a hand drawing so that drawn sketches work too.

    One time in four the map is exactly what edges_from_photo gives (what the app's helper puts on the canvas).
    Otherwise the strokes get thinner or 1-3 px thicker, wobble by up to ~1.5 px, lose a few short pieces, and
    may be slightly blurred.
    """
    edges = np.asarray(imaging.edges_from_photo(Image.fromarray(photo)).convert("L"))  # (H, W): 0 ink, 255 paper
    if rng.random() < 0.25:
        return np.repeat(edges[..., None], 3, axis=2)
    nrng = np.random.default_rng(rng.getrandbits(64))
    change = rng.choice((-1, 0, 1, 1, 2, 3))
    if change < 0:
        edges = np.asarray(Image.fromarray(edges).filter(ImageFilter.MaxFilter(3)))  # paper eats the stroke rims
    elif change > 0:
        edges = thicken(edges, change)
    edges = wobble(edges, nrng, amplitude=rng.uniform(0.5, 1.5))
    h, w = edges.shape
    for _ in range(rng.randint(0, 6)):  # the pen lifts here and there
        y, x, s = rng.randrange(h), rng.randrange(w), rng.randint(3, 12)
        edges[y:y + s, x:x + s] = 255
    img = Image.fromarray(edges)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return np.asarray(img.convert("RGB"))


def thicken(ink: np.ndarray, r: int) -> np.ndarray:
    """Dark strokes r pixels wider (minimum over an (r+1)x(r+1) square, centred)."""
    h, w = ink.shape
    padded = np.pad(ink, r, constant_values=255)
    out = ink.copy()
    lo = -(r // 2)
    for dy in range(lo, lo + r + 1):
        for dx in range(lo, lo + r + 1):
            out = np.minimum(out, padded[r + dy:r + dy + h, r + dx:r + dx + w])
    return out


def wobble(ink: np.ndarray, nrng: np.random.Generator, *, amplitude: float) -> np.ndarray:
    """Shift pixels along a smooth random displacement field: straight edges become hand-drawn lines."""
    h, w = ink.shape
    fields = [np.asarray(Image.fromarray(nrng.normal(0, amplitude, (4, 4)).astype(np.float32), mode="F")
                         .resize((w, h), Image.Resampling.BILINEAR)) for _ in range(2)]
    yy, xx = np.mgrid[0:h, 0:w]
    ys = np.clip(np.rint(yy + fields[0]), 0, h - 1).astype(np.intp)
    xs = np.clip(np.rint(xx + fields[1]), 0, w - 1).astype(np.intp)
    return ink[ys, xs]


class Sampler:
    """Makes one training pair (input, target) from a random.Random; picklable for DataLoader workers.

    kinds: "unpaired" (a from A, b from B), "paired" (aligned crops), "edges" (edge map, photo), "sr" (LR, HR).
    """

    def __init__(self, kind: str, a: ImageBank | None, b: ImageBank, *, crop: int, scale: int) -> None:
        self.kind, self.a, self.b, self.crop, self.scale = kind, a, b, crop, scale

    def __call__(self, rng: random.Random) -> tuple[Tensor, Tensor]:
        crop, b = self.crop, self.b
        if self.kind == "unpaired":
            x = random_view(rng, [self.a[rng.randrange(len(self.a))]], crop, rescale=True)[0]
            y = random_view(rng, [b[rng.randrange(len(b))]], crop, rescale=True)[0]
        elif self.kind == "paired":
            i = rng.randrange(len(b))
            x, y = random_view(rng, [self.a[i], b[i]], crop, rescale=True)
        elif self.kind == "edges":
            y = random_view(rng, [b[rng.randrange(len(b))]], crop, rescale=True)[0]
            x = sketchy_edges(y, rng)
        else:  # SR keeps the HR pixels as they are (a zoom would blur the ground truth) and adds 90° turns
            y = random_view(rng, [b[rng.randrange(len(b))]], crop, rescale=False)[0]
            if rng.random() < 0.5:
                y = np.ascontiguousarray(np.rot90(y))
            x = np.asarray(Image.fromarray(y).resize((crop // self.scale,) * 2, Image.Resampling.BICUBIC))
        return chw(x), chw(y)


class StepDataset(Dataset):
    """Item (step, j) is sample j of that step's batch, drawn with a generator seeded by (seed, step, j).

    The data order is therefore a pure function of the step: a resumed run sees exactly the batches an
    uninterrupted run would have seen, with no loader state to save, and any number of workers gives the same data.
    """

    def __init__(self, sampler: Sampler, seed: int) -> None:
        self.sampler, self.seed = sampler, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        step, j = key
        return self.sampler(random.Random(f"{self.seed}/{step}/{j}"))


class StepBatches:
    """Batch sampler: [(step, 0), ..., (step, batch-1)] for each step in [start, total)."""

    def __init__(self, start: int, total: int, batch: int) -> None:
        self.start, self.total, self.batch = start, total, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            yield [(step, j) for j in range(self.batch)]

    def __len__(self) -> int:
        return max(0, self.total - self.start)


@dataclass
class Data:
    sampler: Sampler
    val: list[tuple[Tensor, Tensor]]  # fixed uint8 (3, h, w) pairs for validation and sample grids
    n_train: int  # training images, for --epochs
    val_note: str  # where the validation images come from, for the start-up line


def train_val(bank: ImageBank, val_root: Path | None, n_val: int) -> tuple[ImageBank, list[np.ndarray], str]:
    """Training images and up to n_val validation images, with a note on where the latter come from.

    --val-data when given; else the last n_val images are held back when enough remain to train on; else the
    first training images double as validation images.
    """
    if val_root is not None:
        held, note = read_folder(val_root), str(val_root)
    elif len(bank) >= 2 * n_val:
        idx = list(range(len(bank)))
        bank, held, note = bank.subset(idx[:-n_val]), bank.subset(idx[-n_val:]), f"{n_val} held-out images"
    else:
        held, note = bank, f"training images (fewer than {2 * n_val}; nothing held out)"
    return bank, [held[i] for i in range(min(n_val, len(held)))], note


def paired_banks(folder: Path, crop: int) -> tuple[ImageBank, ImageBank]:
    """pix2pix data: DIR/A + DIR/B matched by file name, else side-by-side AB files in DIR."""
    if (folder / "A").exists() or (folder / "B").exists():
        a, b = read_folder(folder / "A"), read_folder(folder / "B")
        stems_a, stems_b = {f.stem for f in a.files}, {f.stem for f in b.files}
        if stems_a != stems_b:
            only = [f"A/{s}" for s in sorted(stems_a - stems_b)] + [f"B/{s}" for s in sorted(stems_b - stems_a)]
            raise TrainError(f"unmatched pairs in {folder} (A and B are matched by file name): {', '.join(only)}")
        a = a.subset(sorted(range(len(a)), key=lambda i: a.files[i].stem))
        b = b.subset(sorted(range(len(b)), key=lambda i: b.files[i].stem))
        differ = [fa.stem for fa, sa, sb in zip(a.files, a.sizes, b.sizes, strict=True) if sa != sb]
        if differ:
            raise TrainError(f"pairs of different sizes in {folder}: {', '.join(differ)}")
        check_min_size(a, crop, f"images in {folder}")
        return a, b
    ab = read_folder(folder)
    odd = [f.name for f, (w, _) in zip(ab.files, ab.sizes, strict=True) if w % 2]
    if odd:
        raise TrainError(f"side-by-side AB images need an even width: {', '.join(odd)} (or use DIR/A + DIR/B)")
    a, b = ab.halves()
    check_min_size(a, crop, f"AB image halves in {folder}")
    return a, b


def load_data(cfg: TrainConfig, spec: ModelSpec) -> Data:
    """Read and check cfg.data for cfg.mode; validation images come from --val-data or are held back."""
    if not cfg.data:
        raise TrainError("--data is required (see `python train.py --help`)")
    root, crop, n_val = Path(cfg.data), cfg.crop, cfg.val_count
    val_root = Path(cfg.val_data) if cfg.val_data else None
    if cfg.mode == "cyclegan":
        a, b = read_folder(root / "trainA"), read_folder(root / "trainB")
        check_min_size(a, crop, f"images in {root / 'trainA'}")
        check_min_size(b, crop, f"images in {root / 'trainB'}")
        if val_root is not None and (val_root / "testA").is_dir():
            val_root = val_root / "testA"
        a, held, note = train_val(a, val_root, n_val)
        val = [(chw(x), chw(x)) for x in (centre_view(h, crop) for h in held)]  # the target is unused
        return Data(Sampler("unpaired", a, b, crop=crop, scale=1), val, len(a), note)
    if cfg.mode == "pix2pix" and cfg.edges_from_photos:
        photos = read_folder(root)
        check_min_size(photos, crop, f"photos in {root}")
        photos, held, note = train_val(photos, val_root, n_val)
        val = []
        for photo in held:  # clean edge maps, exactly what the app's helper makes
            y = centre_view(photo, crop)
            val.append((chw(np.asarray(imaging.edges_from_photo(Image.fromarray(y)))), chw(y)))
        return Data(Sampler("edges", None, photos, crop=crop, scale=1), val, len(photos), note)
    if cfg.mode == "pix2pix":
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
    hr = read_folder(root)
    check_min_size(hr, crop, f"images in {root}")
    hr, held, note = train_val(hr, val_root, n_val)
    val = []
    for y in held:
        # Centre crop of at most 2 training crops: big enough to judge, small enough to validate often.
        side = min(min(y.shape[:2]), 2 * crop) // spec.scale * spec.scale
        top, left = (y.shape[0] - side) // 2, (y.shape[1] - side) // 2
        y = y[top:top + side, left:left + side]
        x = np.asarray(Image.fromarray(y).resize((side // spec.scale,) * 2, Image.Resampling.BICUBIC))
        val.append((chw(x), chw(y)))
    return Data(Sampler("sr", None, hr, crop=crop, scale=spec.scale), val, len(hr), note)


# ---- networks and losses --------------------------------------------------------------------------------------

def model_ref(model_id: str) -> str:
    """A train.py run folder stands for its final/ model, so `--init runs/x4` works like `--init runs/x4/final`."""
    final = Path(model_id) / "final"
    return str(final) if model_id not in SPECS and (final / "config.json").is_file() else model_id


def trained_spec(cfg: TrainConfig) -> tuple[ModelSpec, nn.Module]:
    """The spec whose architecture is trained, and its generator: --init's weights, else freshly initialised.

    The architecture is --model's, else --init's, else the mode's bundled default; --arch-kwargs edits it.
    """
    task = TASK_OF_MODE[cfg.mode]
    loaded = None
    if cfg.init:
        loaded = load_with_fallback(get_spec(model_ref(cfg.init)))
        if loaded.source.note:
            print(f"note: {loaded.source.note}", file=sys.stderr)
    if cfg.model:
        spec = get_spec(model_ref(cfg.model))
    else:
        spec = loaded.spec if loaded else SPECS[DEFAULT_MODEL[cfg.mode]]
    if spec.task != task:
        raise TrainError(f"{spec.id} is a {spec.task} model; {cfg.mode} trains {task} models")
    if cfg.arch_kwargs:
        kwargs = {**spec.arch_kwargs, **cfg.arch_kwargs}
        multiple = spec.size_multiple
        if spec.arch == "unet_generator":  # the U-Net's bottleneck is 1x1 at 2**num_downs pixels
            multiple = 2 ** int(kwargs.get("num_downs", 8))
        spec = dataclasses.replace(spec, arch_kwargs=kwargs, size_multiple=multiple)
    if loaded is not None:
        if (loaded.spec.arch, dict(loaded.spec.arch_kwargs)) != (spec.arch, dict(spec.arch_kwargs)):
            raise TrainError(f"--init {cfg.init} is a {loaded.spec.arch} {dict(loaded.spec.arch_kwargs)}, not the "
                             f"{spec.arch} {dict(spec.arch_kwargs)} being trained; drop --model/--arch-kwargs")
        return spec, loaded.module.train()
    try:
        return spec, build_generator(spec)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"cannot build {spec.arch} with {dict(spec.arch_kwargs)}: {exc}") from exc


def make_discriminator(cfg: TrainConfig, in_channels: int) -> nn.Module:
    """PatchGAN (70x70, InstanceNorm as in CycleGAN) for cyclegan/pix2pix; SRGAN's classifier for srgan."""
    if cfg.mode != "srgan":
        return build_arch("patchgan", in_channels=in_channels, ndf=cfg.d_width, n_layers=3,
                          norm="none" if cfg.spectral_norm else "instance", spectral_norm=cfg.spectral_norm)
    d = build_arch("srgan_discriminator", in_channels=in_channels, channels=cfg.d_width)
    if cfg.spectral_norm:  # the SRGAN classifier has no switch for it: wrap its conv and dense layers here
        layers = [(m, name, c) for m in d.modules() for name, c in m.named_children()
                  if isinstance(c, (nn.Conv2d, nn.Linear))]
        for parent, name, layer in layers:
            setattr(parent, name, spectral_norm(layer))
    return d


class GanLoss:
    """D and G objectives for lsgan / vanilla / hinge / wgangp; one-sided label smoothing for D's real target."""

    def __init__(self, kind: str, real_label: float) -> None:
        self.kind, self.real_label = kind, real_label

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        real, fake = real.float(), fake.float()
        if self.kind == "lsgan":  # halved, as the papers do, so D learns at half G's pace
            return 0.5 * (F.mse_loss(real, torch.full_like(real, self.real_label)) + fake.pow(2).mean())
        if self.kind == "vanilla":
            return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.full_like(real, self.real_label))
                          + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        if self.kind == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return fake.mean() - real.mean()  # wgangp; the caller adds the gradient penalty

    def g_loss(self, fake: Tensor) -> Tensor:
        fake = fake.float()
        if self.kind == "lsgan":
            return F.mse_loss(fake, torch.ones_like(fake))
        if self.kind == "vanilla":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        return -fake.mean()


def gradient_penalty(d: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al.): 10 * (|grad D(mix)| - 1)^2, computed in fp32."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
    return 10.0 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class FeatureTap:
    """Collects D's LeakyReLU outputs during one forward pass, for feature matching (Salimans et al.)."""

    def __init__(self, d: nn.Module) -> None:
        self.features: list[Tensor] = []
        self.active = False
        for module in d.modules():
            if isinstance(module, nn.LeakyReLU):
                module.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, out: Tensor) -> None:
        if self.active:
            self.features.append(out)

    def run(self, d: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        self.features, self.active = [], True
        try:
            return d(x), self.features
        finally:
            self.active = False


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): D also sees older fakes, which damps oscillation.

    Kept on the training device, so querying it never waits for the GPU.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, batch: Tensor, rng: random.Random) -> Tensor:
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif rng.random() < 0.5:
                i = rng.randrange(self.size)
                out.append(self.images[i])
                self.images[i] = img
            else:
                out.append(img)
        return torch.stack(out)


class VggContent(nn.Module):
    """SRGAN's content loss: MSE of VGG19 relu5_4 features, scaled by 1/12.75^2 as in the paper.

    Only built from torchvision's local weights cache; training never downloads anything.
    """

    def __init__(self, value_range: tuple[float, float]) -> None:
        super().__init__()
        import torchvision

        cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
        if not cached.is_file():
            raise FileNotFoundError(cached)
        vgg = torchvision.models.vgg19()
        vgg.load_state_dict(torch.load(cached, weights_only=True, map_location="cpu"))
        self.features = vgg.features[:36].eval().requires_grad_(False)  # up to relu5_4
        lo, hi = value_range
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        # one affine map from the model's range to ImageNet-normalised input
        self.register_buffer("scale", (1.0 / ((hi - lo) * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", ((-lo / (hi - lo) - mean) / std).view(1, 3, 1, 1))

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return F.mse_loss(self.features(sr * self.scale + self.shift),
                          self.features(hr * self.scale + self.shift)) / 12.75**2


# ---- the trainer ----------------------------------------------------------------------------------------------

class Trainer:
    """One run: networks, optimisers, one step function per mode, validation, samples, checkpoints."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device)
        self.device_type = torch.device(self.device).type
        self.amp = cfg.amp if cfg.amp is not None else self.device_type == "cuda"
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
        if self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True  # every step has the same shapes
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.spec, generator = trained_spec(cfg)
        self.check_crop()
        self.data = load_data(cfg, self.spec)
        self.total = cfg.steps
        if cfg.epochs is not None:
            self.total = cfg.epochs * max(1, math.ceil(self.data.n_train / cfg.batch_size))
        self.nets: dict[str, nn.Module] = {"G": generator}
        self.pools: dict[str, ImagePool] = {}
        if cfg.mode == "cyclegan":
            self.nets["G_B"] = build_generator(self.spec)
            self.nets["D_A"] = make_discriminator(cfg, 3)
            self.nets["D_B"] = make_discriminator(cfg, 3)
            self.pools = {"A": ImagePool(cfg.pool_size), "B": ImagePool(cfg.pool_size)}
        else:  # pix2pix's D judges (input, output) pairs: 6 channels
            self.nets["D"] = make_discriminator(cfg, 6 if cfg.mode == "pix2pix" else 3)
        memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for net in self.nets.values():
            net.to(self.device, memory_format=memory).train()
        g_params = [p for k, n in self.nets.items() if k.startswith("G") for p in n.parameters()]
        d_params = [p for k, n in self.nets.items() if k.startswith("D") for p in n.parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=cfg.lr_d or cfg.lr, betas=(cfg.beta1, 0.999))
        # fp16 needs loss scaling; one scaler per optimiser because G's and D's gradients differ in size.
        fp16 = self.amp and self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(self.device_type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(self.device_type, enabled=fp16)
        self.gan = GanLoss(cfg.gan_loss, cfg.label_smoothing)
        self.taps = {k: FeatureTap(n) for k, n in self.nets.items() if k.startswith("D")}
        self.content: nn.Module | None = None
        if cfg.mode == "srgan" and cfg.pretrain_steps < self.total:
            try:
                self.content = VggContent(self.spec.value_range).to(self.device)
            except (ImportError, OSError, RuntimeError):
                print(f"note: no VGG19 weights in torchvision's cache ({Path(torch.hub.get_dir()) / 'checkpoints'}); "
                      f"the content loss falls back to L1 on pixels", file=sys.stderr)
        self.step = 0

    def check_crop(self) -> None:
        crop, spec = self.cfg.crop, self.spec
        if self.cfg.mode == "srgan":
            if crop % spec.scale or crop < 32:
                raise TrainError(f"--crop {crop}: the HR crop must be a multiple of the scale ({spec.scale}) and at "
                                 f"least 32 px (the SRGAN discriminator's minimum)")
        elif crop % spec.size_multiple:
            raise TrainError(f"--crop {crop} must be a multiple of {spec.size_multiple} for {spec.arch} "
                             f"{dict(spec.arch_kwargs)}")

    # --- helpers
    def prep(self, x: Tensor) -> Tensor:
        """uint8 (N, 3, H, W) on the CPU → float in the model's value range on the device."""
        lo, hi = self.spec.value_range
        x = x.to(self.device, non_blocking=True).float().mul_((hi - lo) / 255.0).add_(lo)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp)

    def noise(self, x: Tensor) -> Tensor:
        """Instance noise (Sønderby et al.): blurs D's view early on, fading to nothing by the last step."""
        sigma = self.cfg.instance_noise * max(0.0, 1.0 - self.step / max(1, self.total))
        return x + sigma * torch.randn_like(x) if sigma > 0 else x

    def d_adv(self, name: str, real: Tensor, fake: Tensor) -> Tensor:
        d = self.nets[name]
        loss = self.gan.d_loss(d(self.noise(real)), d(self.noise(fake.detach())))
        if self.gan.kind == "wgangp":
            with torch.autocast(self.device_type, enabled=False):
                loss = loss + gradient_penalty(d, real, fake.detach())
        return loss

    def g_adv(self, name: str, fake: Tensor, real: Tensor) -> Tensor:
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
        if self.cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()

    def set_learning_rates(self) -> None:
        """Constant, then linear decay to 0 from --decay-from: a pure function of the step, so resuming is exact."""
        start = int(self.cfg.decay_from * self.total)
        factor = 1.0 if self.step < start else max(0.0, (self.total - self.step) / max(1, self.total - start))
        for opt, base in ((self.opt_g, self.cfg.lr), (self.opt_d, self.cfg.lr_d or self.cfg.lr)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    # --- one optimisation step per mode, discriminator and generator in the papers' order; each returns its
    # losses as tensors, so nothing waits for the GPU until a log row is written
    def train_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"cyclegan": self.cyclegan_step, "pix2pix": self.pix2pix_step, "srgan": self.srgan_step}[
            self.cfg.mode](x, y)

    def cyclegan_step(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
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

    def pix2pix_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
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

    def srgan_step(self, lr: Tensor, hr: Tensor) -> dict[str, Tensor]:
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

    # --- validation and samples
    @torch.no_grad()
    def run_val(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(input, output, target) per validation pair in the model's range on the CPU; cyclegan's "target" is
        the reconstruction G_B(G(a))."""
        lo, hi = self.spec.value_range
        nets = [self.nets["G"].eval()] + ([self.nets["G_B"].eval()] if self.cfg.mode == "cyclegan" else [])
        triples = []
        with self.autocast():
            for x8, y8 in self.data.val:
                x = self.prep(x8[None])
                out = nets[0](x).float().clamp(lo, hi)
                target = nets[1](out).float().clamp(lo, hi) if len(nets) > 1 else self.prep(y8[None])
                triples.append((x[0].float().cpu(), out[0].cpu(), target[0].float().cpu()))
        for net in nets:
            net.train()
        return triples

    def validate(self) -> dict[str, float]:
        """cyclegan: cycle L1; pix2pix: L1; srgan: PSNR/SSIM on Y (border of `scale` px cropped). In [0, 1] units."""
        lo, hi = self.spec.value_range
        scores: dict[str, list[float]] = {}
        for x, out, target in self.run_val():
            if self.cfg.mode == "cyclegan":
                scores.setdefault("val_cycle_l1", []).append(float((target - x).abs().mean()) / (hi - lo))
            elif self.cfg.mode == "pix2pix":
                scores.setdefault("val_l1", []).append(float((out - target).abs().mean()) / (hi - lo))
            else:
                s = self.spec.scale
                ys = [rgb_to_y(((t - lo) / (hi - lo)).permute(1, 2, 0).numpy())[s:-s, s:-s] for t in (out, target)]
                scores.setdefault("val_psnr", []).append(psnr(ys[0], ys[1], peak=255.0))
                scores.setdefault("val_ssim", []).append(ssim(ys[0], ys[1]))
        return {k: float(np.mean(v)) for k, v in scores.items()}

    def write_samples(self) -> Path:
        """samples/step_NNNNNNN.png: one row per validation image, input | output | target (cyclegan: | G_B(G(a)))."""
        lo, hi = self.spec.value_range
        rows = []
        for triple in self.run_val():
            h, w = triple[2].shape[1:]
            rows.append(torch.cat([F.interpolate(t[None], size=(h, w), mode="nearest")[0] for t in triple], dim=2))
        width = max(r.shape[2] for r in rows)
        grid = torch.cat([F.pad(r, (0, width - r.shape[2]), value=hi) for r in rows], dim=1)
        arr = ((grid - lo) / (hi - lo)).clamp(0, 1).permute(1, 2, 0).numpy()
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return imaging.save_png(Image.fromarray((arr * 255 + 0.5).astype(np.uint8)), path)

    # --- checkpoints: plain tensors, numbers and strings only, so torch.load(weights_only=True) reads them
    def state(self) -> dict[str, Any]:
        py_version, py_state, py_gauss = self.rng.getstate()
        _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "config": json.dumps(asdict(self.cfg)),
            "nets": {k: n.state_dict() for k, n in self.nets.items()},
            "optimizers": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "scalers": {"G": self.scaler_g.state_dict(), "D": self.scaler_d.state_dict()},
            "pools": {k: torch.stack(p.images) if p.images else torch.empty(0) for k, p in self.pools.items()},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device_type == "cuda" else [],
                "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                          "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
                "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                           "gauss": py_gauss},
            },
        }

    def save_checkpoint(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "checkpoint.pt"
        atomic_write(path, lambda p: torch.save(self.state(), p))
        atomic_write(self.out / "train_config.json", lambda p: p.write_text(json.dumps(asdict(self.cfg), indent=2)))
        return path

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint read by `read_checkpoint`: weights, optimisers, scalers, pools, RNGs, step."""
        for k, net in self.nets.items():
            net.load_state_dict(ckpt["nets"][k])
        self.opt_g.load_state_dict(ckpt["optimizers"]["G"])
        self.opt_d.load_state_dict(ckpt["optimizers"]["D"])
        for scaler, saved in ((self.scaler_g, ckpt["scalers"]["G"]), (self.scaler_d, ckpt["scalers"]["D"])):
            if saved and scaler.is_enabled():  # empty when the run had no fp16 loss scaling
                scaler.load_state_dict(saved)
        for k, images in ckpt["pools"].items():
            self.pools[k].images = [img.to(self.device) for img in images]
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device_type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        n = rng["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        py = rng["python"]
        self.rng.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
        self.step = int(ckpt["step"])

    def write_final(self) -> Path:
        """final/ (and final_reverse/ for cyclegan): model.safetensors + config.json, a spec gan_models loads."""
        cfg, spec = self.cfg, self.spec
        name = cfg.name or self.out.resolve().name
        fields = {
            "id": name, "title": f"{name} (train.py)", "task": spec.task, "arch": spec.arch,
            "arch_kwargs": dict(spec.arch_kwargs), "value_range": list(spec.value_range), "scale": spec.scale,
            "size_multiple": spec.size_multiple, "tile": spec.tile, "tile_overlap": spec.tile_overlap,
            "input_size": spec.input_size if cfg.mode == "srgan" else cfg.crop,
            "licence": spec.licence if cfg.init else "",
            "description": f"{cfg.mode} trained with train.py for {self.step} steps on {cfg.data}",
            "training": {"steps": self.step, "config": asdict(cfg)},
        }
        dtype = torch.float16 if cfg.export_fp16 else torch.float32
        final = save_model_folder(self.nets["G"], self.out / "final", spec_fields=fields, dtype=dtype)
        if cfg.mode == "cyclegan":
            reverse = {**fields, "id": f"{name}-reverse", "title": f"{name} B→A (train.py)"}
            save_model_folder(self.nets["G_B"], self.out / "final_reverse", spec_fields=reverse, dtype=dtype)
        return final

    # --- the loop
    def fit(self, stop: StopRequest, deadline: float | None) -> int:
        """Train to self.total steps, or until a signal or the deadline; always ends with a checkpoint and final/.

        Returns the exit code: 0 done, 1 diverged (non-finite losses), 128 + signal number when interrupted.
        """
        cfg = self.cfg
        workers = cfg.workers if cfg.workers is not None else max(0, min(16, (os.cpu_count() or 1) - 1))
        loader = DataLoader(StepDataset(self.data.sampler, cfg.seed),
                            batch_sampler=StepBatches(self.step, self.total, cfg.batch_size), num_workers=workers,
                            pin_memory=self.device_type == "cuda", worker_init_fn=ignore_signals,
                            prefetch_factor=4 if workers else None,
                            # its own generator: the loader's worker seeding would otherwise draw from the global
                            # torch RNG and shift it differently in a resumed run (our data uses no worker seeds)
                            generator=torch.Generator().manual_seed(cfg.seed))
        log = RunLog(self.out, cfg.mode, resume_step=self.step)
        bar = progress_bar(self.step, self.total)
        try:
            if self.step == 0:  # a baseline row, so the log shows what training changed
                log.write({"step": 0, "seconds": 0.0, **self.validate()})
            start = time.monotonic() - log.seconds_before
            sums: dict[str, Tensor] = {}
            logged = self.step  # step of the last log row; losses are averaged over the steps since
            for x, y in loader:
                self.set_learning_rates()
                for k, v in self.train_step(self.prep(x), self.prep(y)).items():
                    sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
                self.step += 1
                # the last step of this session, planned or not, is always validated, sampled and saved
                last = bool(self.step == self.total or stop.reason
                            or (deadline is not None and time.monotonic() > deadline))
                validate, sample = self.step % cfg.val_every == 0, self.step % cfg.sample_every == 0
                if self.step % cfg.log_every == 0 or validate or sample or last:
                    row = {"step": self.step, "seconds": round(time.monotonic() - start, 2)}
                    row |= {k: float(v) / (self.step - logged) for k, v in sums.items()}  # the GPU syncs
                    if not all(math.isfinite(v) for v in row.values()):
                        print(f"\nerror: the losses became {row} near step {self.step}; checkpoint.pt is left as "
                              f"it was. Lower --lr, or try --grad-clip 1, --spectral-norm or --gan-loss lsgan",
                              file=sys.stderr)
                        return 1
                    sums, logged = {}, self.step
                    if validate or last:
                        row |= self.validate()
                    if sample or last:
                        self.write_samples()
                    log.write(row)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k not in ("step", "seconds")},
                                    refresh=False)
                bar.update(1)
                if last:
                    break
                if self.step % cfg.save_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
            log.close()
        self.save_checkpoint()
        final = self.write_final()
        if stop.reason and self.step < self.total:
            print(f"{stop.reason}: saved {self.out / 'checkpoint.pt'} and {final} at step {self.step}; continue "
                  f"with: python train.py {cfg.mode} --out {self.out} --resume", file=sys.stderr)
            return 128 + int(getattr(signal, stop.reason))
        if cfg.push_to_hub:
            push_to_hub(final, cfg.push_to_hub)
        return 0


# ---- small helpers --------------------------------------------------------------------------------------------

def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: no CUDA device is available (use --device cpu)")
    try:
        torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"--device {name}: {exc}") from exc
    return name


def ignore_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C/SIGTERM to the main process, which saves a checkpoint and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks the loop to stop after the current step; a second one exits."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.reason:
            raise SystemExit(128 + signum)
        self.reason = signal.Signals(signum).name
        print(f"\n{self.reason}: stopping after this step and saving (send it again to quit at once)",
              file=sys.stderr)


class RunLog:
    """log.csv (fixed columns per mode) and TensorBoard scalars when tensorboard is installed.

    On resume, rows past the checkpoint's step (written after the last save of a crashed run) are dropped.
    """

    def __init__(self, out: Path, mode: str, *, resume_step: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path, self.columns = out / "log.csv", ["step", "seconds", *LOG_COLUMNS[mode]]
        kept = []
        if resume_step and self.path.exists():
            with self.path.open(newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.seconds_before = float(kept[-1]["seconds"]) if kept else 0.0  # training time of the earlier sessions
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, restval="", extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "seconds"):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def progress_bar(start: int, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr, smoothing=0.05)


def push_to_hub(folder: Path, repo: str) -> None:
    """Upload final/ (model.safetensors + config.json, the layout gan_models reads) to a Hub model repo."""
    from huggingface_hub import HfApi, get_token

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"} or get_token() is None:
        print(f"not pushed to {repo}: offline (HF_HUB_OFFLINE) or no Hugging Face token; upload later with "
              f"`huggingface-cli upload {repo} {folder} .`", file=sys.stderr)
        return
    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder))
        print(f"pushed {folder} to https://huggingface.co/{repo}")
    except Exception as exc:  # noqa: BLE001 - a failed upload must not fail the run: the model is on disk
        print(f"not pushed to {repo}: {type(exc).__name__}: {exc}; the model is in {folder}", file=sys.stderr)


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"nothing to resume: {path} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - every unreadable checkpoint gets the same clear message
        raise TrainError(f"cannot resume from {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"cannot resume from {path}: not a train.py checkpoint")
    return ckpt


def resumed_config(args: argparse.Namespace, ckpt_path: Path, ckpt: dict[str, Any]) -> TrainConfig:
    """The saved config, with the options given now on top (except those that define the networks)."""
    saved, given = json.loads(ckpt["config"]), explicit_options(args)
    changed = [k for k in ARCH_FIELDS if k in given and given[k] != saved.get(k)]
    if changed:
        raise TrainError(f"--resume cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} "
                         f"(fixed by {ckpt_path}); start a new run with another --out instead")
    # the run folder is where the checkpoint is now, wherever it was when the run started
    return TrainConfig(**{**saved, **given, "out": given.get("out") or str(ckpt_path.parent)})


def main(argv: list[str] | None = None) -> int:
    """Parse options, train, and map every user mistake to one line on stderr and exit code 2."""
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    tune_malloc()  # CPU steps fault their activations in again otherwise: srgan 60 steps 14.6-16.5 s → 12.0-14.1 s
    stop = StopRequest()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.resume is not None:
            ckpt_path = Path(args.resume) if args.resume else Path(args.out or TrainConfig.out) / "checkpoint.pt"
            ckpt = read_checkpoint(ckpt_path)
            cfg = resumed_config(args, ckpt_path, ckpt)
            trainer = Trainer(cfg)
            trainer.restore(ckpt)
        else:
            cfg = TrainConfig(**explicit_options(args))
            if (Path(cfg.out) / "checkpoint.pt").exists():
                raise TrainError(f"{cfg.out} already holds a run (checkpoint.pt); add --resume to continue it, or "
                                 f"choose another --out")
            trainer = Trainer(cfg)
        spec = trainer.spec
        print(f"{cfg.mode}: {spec.arch} {dict(spec.arch_kwargs)} on {trainer.device}"
              f"{f' ({cfg.amp_dtype} autocast)' if trainer.amp else ''}; {trainer.data.n_train} training images, "
              f"validation on {trainer.data.val_note}; steps {trainer.step} -> {trainer.total}, batch "
              f"{cfg.batch_size}, crop {cfg.crop}; writing to {cfg.out}")
        deadline = started + cfg.max_minutes * 60 if cfg.max_minutes is not None else None
        code = trainer.fit(stop, deadline)
        if code == 0:
            minutes, seconds = divmod(round(time.monotonic() - started), 60)
            print(f"done: {trainer.step} steps in {minutes} min {seconds} s; generator in {trainer.out / 'final'} "
                  f"(python app.py --weights {trainer.out} offers it; the CLI and gan_models.get_spec load it too)")
        return code
    except GanModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())

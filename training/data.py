"""Training data: image folders decoded once, random crops, hand-drawn edge maps, and batches indexed by step.

The data order is a pure function of (seed, step, sample), so a resumed run sees exactly the batches an
uninterrupted run would have seen. Each mode's `load_data` picks the folders and the kind of pair (see Sampler).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset

from gan_models import imaging
from gan_models.errors import GanModelsError

from . import TrainError

RAM_CACHE_BYTES = 2 * 2**30  # decoded datasets up to this size stay in RAM, so workers never decode a file twice


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
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in imaging.IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TrainError(f"{folder} holds no images (looked for {', '.join(sorted(imaging.IMAGE_SUFFIXES))})")
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
    """Batch sampler: [(step, 0), ..., (step, batch-1)] for each step in [start, total); with `share` (a process's
    slice of the global batch, `Ranks.share`) only those j: the distributed sampler of train.py under torchrun."""

    def __init__(self, start: int, total: int, batch: int, share: range | None = None) -> None:
        self.start, self.total = start, total
        self.share = range(batch) if share is None else share

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            yield [(step, j) for j in self.share]

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

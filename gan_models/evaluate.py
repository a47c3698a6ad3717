"""Measure a model's quality on a folder of images, next to the trivial baseline for its task.

    python -m gan_models eval default-upscale-x4 --data ../shared/data/sr/val
    python -m gan_models eval default-sketch --data held_out_photos/ --out eval/
    python -m gan_models eval default-style --data held_out_photos/ --reverse default-style-reverse

- upscale: the image is cropped to a multiple of the scale, shrunk by bicubic (PIL), upscaled again by the model
  and by bicubic; PSNR and SSIM on the Y channel (BT.601) with `scale` pixels of border cropped, as the SR
  literature reports them.
- sketch2photo: each photo (shorter side resized to the model's input size, centre-cropped square) becomes an edge
  map with `edges_from_photo`, the model turns it back into a photo; L1 and PSNR against the real photo, next to the
  edge map itself and the photo's own mean colour as baselines.
- style: sample grid (photo | styled | back), how much the style changed the photo (mean L1), and with `--reverse`
  the cycle-consistency L1 |G_B(G_A(x)) - x|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import imaging
from .errors import GanModelsError
from .imaging import IMAGE_SUFFIXES, psnr  # psnr: re-exported, training and older callers import it from here
from .pipeline import Translator


@dataclass
class EvalReport:
    """Per-image rows and their means; `to_markdown()` prints the table the README quotes."""

    model_id: str
    task: str
    columns: list[str]
    rows: list[tuple[str, list[float]]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def means(self) -> dict[str, float]:
        if not self.rows:
            return {c: float("nan") for c in self.columns}
        values = np.array([r[1] for r in self.rows], dtype=np.float64)
        return dict(zip(self.columns, values.mean(axis=0).tolist(), strict=True))

    def to_markdown(self) -> str:
        head = "| image | " + " | ".join(self.columns) + " |"
        rule = "|---|" + "---|" * len(self.columns)
        lines = [head, rule]
        for name, values in self.rows:
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}" for v in values) + " |")
        means = self.means
        lines.append("| **mean** | " + " | ".join(
            f"**{means[c]:.4f}**" if abs(means[c]) < 1 else f"**{means[c]:.2f}**" for c in self.columns) + " |")
        return "\n".join(lines)


# ---- metrics ----------------------------------------------------------------------------------------------

def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] → Y of YCbCr (BT.601, studio range 16..235) in [0, 255], as MATLAB's rgb2ycbcr."""
    return 16.0 + rgb[..., 0] * 65.481 + rgb[..., 1] * 128.553 + rgb[..., 2] * 24.966


def ssim(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    """SSIM of two 2-D images (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, valid area)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _gauss_valid(a), _gauss_valid(b)
    var_a = _gauss_valid(a * a) - mu_a ** 2
    var_b = _gauss_valid(b * b) - mu_b ** 2
    cov = _gauss_valid(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def _gauss_valid(x: np.ndarray, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    taps /= taps.sum()
    if min(x.shape) < size:
        raise GanModelsError(f"image of {x.shape[1]}x{x.shape[0]} is too small for SSIM's {size}x{size} window")
    rows = sum(t * x[i:x.shape[0] - size + 1 + i] for i, t in enumerate(taps))
    return sum(t * rows[:, i:x.shape[1] - size + 1 + i] for i, t in enumerate(taps))


# ---- data -------------------------------------------------------------------------------------------------

def image_files(folder: str | Path, *, limit: int | None = None) -> list[Path]:
    """Image files directly in `folder`, sorted; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanModelsError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GanModelsError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files[:limit] if limit else files


def _rgb(path: Path) -> np.ndarray:
    rgb, _, _ = imaging.split_image(imaging.load_image(path).convert("RGB"))
    return rgb


def _square(img: Image.Image, size: int) -> Image.Image:
    """Shorter side resized to `size`, centre-cropped to size x size: the framing pix2pix/CycleGAN train on."""
    w, h = img.size
    f = size / min(w, h)
    img = img.convert("RGB").resize((max(size, round(w * f)), max(size, round(h * f))), Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def _to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def _grid(rows: list[list[Image.Image]], cell: int = 256) -> Image.Image:
    """Rows of images side by side, each fitted into a square cell (at most `cell` px, no larger than they are)."""
    cell = min(cell, max(max(img.size) for row in rows for img in row))
    grid = Image.new("RGB", (cell * max(len(r) for r in rows), cell * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, img in enumerate(row):
            fitted = img.copy()
            fitted.thumbnail((cell, cell))
            grid.paste(fitted, (x * cell, y * cell))
    return grid


# ---- tasks ------------------------------------------------------------------------------------------------

def evaluate_upscale(translator: Translator, files: list[Path], *, out_dir: Path | None = None) -> EvalReport:
    """Y-channel PSNR/SSIM of the model and of bicubic, border cropped by the scale."""
    s = translator.spec.scale
    report = EvalReport(translator.spec.id, "upscale", ["psnr", "ssim", "bicubic_psnr", "bicubic_ssim"], files=files)
    for i, path in enumerate(files):
        hr = imaging.load_image(path).convert("RGB")
        hr = hr.crop((0, 0, hr.width - hr.width % s, hr.height - hr.height % s))
        lr = hr.resize((hr.width // s, hr.height // s), Image.Resampling.BICUBIC)
        sr = translator(lr).convert("RGB")
        bic = lr.resize(hr.size, Image.Resampling.BICUBIC)
        y_hr, y_sr, y_bic = (rgb_to_y(np.asarray(im, np.float64) / 255.0)[s:-s, s:-s] for im in (hr, sr, bic))
        report.rows.append((path.name, [psnr(y_sr, y_hr, peak=255.0), ssim(y_sr, y_hr),
                                        psnr(y_bic, y_hr, peak=255.0), ssim(y_bic, y_hr)]))
        if out_dir is not None and i == 0:
            _save_crops(out_dir / f"{translator.spec.id}_crops.png", bic, sr, hr)
    return report


def _save_crops(path: Path, bic: Image.Image, sr: Image.Image, hr: Image.Image, size: int = 160) -> None:
    # The busiest size x size region (most gradient energy) shows the difference best.
    y = rgb_to_y(np.asarray(hr, np.float64) / 255.0)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1]
    best, box = -1.0, (0, 0)
    step = max(8, size // 4)
    for top in range(0, max(1, hr.height - size), step):
        for left in range(0, max(1, hr.width - size), step):
            e = float(energy[top:top + size, left:left + size].sum())
            if e > best:
                best, box = e, (left, top)
    crop = (box[0], box[1], box[0] + size, box[1] + size)
    panel = Image.new("RGB", (size * 3 * 2, size * 2), "white")
    for i, im in enumerate((bic, sr, hr)):
        panel.paste(im.crop(crop).resize((size * 2, size * 2), Image.Resampling.NEAREST), (i * size * 2, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    imaging.save_png(panel, path)


def evaluate_sketch(translator: Translator, files: list[Path], *, out_dir: Path | None = None) -> EvalReport:
    """photo → edges → model → photo; L1/PSNR against the real photo, and the same for two trivial baselines."""
    size = translator.spec.input_size or 256
    report = EvalReport(translator.spec.id, "sketch2photo",
                        ["l1", "psnr", "edges_l1", "edges_psnr", "mean_colour_l1", "mean_colour_psnr"], files=files)
    samples: list[list[Image.Image]] = []
    for path in files:
        photo = _square(imaging.load_image(path), size)
        edges = imaging.edges_from_photo(photo)
        fake = translator(edges).convert("RGB")
        real = np.asarray(photo, np.float64) / 255.0
        out = np.asarray(fake, np.float64) / 255.0
        edge_arr = np.asarray(edges, np.float64) / 255.0
        mean = np.broadcast_to(real.mean(axis=(0, 1)), real.shape)
        report.rows.append((path.name, [
            float(np.abs(out - real).mean()), psnr(out, real),
            float(np.abs(edge_arr - real).mean()), psnr(edge_arr, real),
            float(np.abs(mean - real).mean()), psnr(mean, real),
        ]))
        samples.append([edges, fake, photo])
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        imaging.save_png(_grid(samples[:6]), out_dir / f"{translator.spec.id}_grid.png")
    return report


def evaluate_style(
    translator: Translator, files: list[Path], *, reverse: Translator | None = None, out_dir: Path | None = None
) -> EvalReport:
    """How far the style moves a photo (L1), and with a reverse model the cycle-consistency L1 back to it."""
    size = translator.spec.input_size or 256
    columns = ["change_l1"] + (["cycle_l1", "cycle_psnr"] if reverse is not None else [])
    report = EvalReport(translator.spec.id, "style", columns, files=files)
    samples: list[list[Image.Image]] = []
    for path in files:
        photo = _square(imaging.load_image(path), size)
        styled = translator(photo).convert("RGB")
        real = np.asarray(photo, np.float64) / 255.0
        fake = np.asarray(styled, np.float64) / 255.0
        values = [float(np.abs(fake - real).mean())]
        row = [photo, styled]
        if reverse is not None:
            back = reverse(styled).convert("RGB")
            rec = np.asarray(back, np.float64) / 255.0
            values += [float(np.abs(rec - real).mean()), psnr(rec, real)]
            row.append(back)
        report.rows.append((path.name, values))
        samples.append(row)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        imaging.save_png(_grid(samples[:6]), out_dir / f"{translator.spec.id}_grid.png")
    return report


def evaluate(
    translator: Translator,
    data: str | Path,
    *,
    reverse: Translator | None = None,
    out_dir: str | Path | None = None,
    limit: int | None = None,
) -> EvalReport:
    """Run the evaluation for the translator's task on the images in `data`."""
    files = image_files(data, limit=limit)
    out = Path(out_dir) if out_dir is not None else None
    task = translator.spec.task
    if task == "upscale":
        return evaluate_upscale(translator, files, out_dir=out)
    if task == "sketch2photo":
        return evaluate_sketch(translator, files, out_dir=out)
    return evaluate_style(translator, files, reverse=reverse, out_dir=out)

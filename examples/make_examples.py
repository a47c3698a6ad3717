"""Draw the example images shown in the app: all procedural, no third-party pictures.

    python examples/make_examples.py     # rewrites the files next to this script (deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
RNG_SEED = 7


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    # Bilinear-upsampled random grid: cheap value noise in [0, 1].
    grid = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    img = Image.fromarray((grid * 255).astype(np.uint8), "L").resize((w + 2 * cell, h + 2 * cell), Image.BILINEAR)
    return np.asarray(img, np.float32)[cell : cell + h, cell : cell + w] / 255.0


def landscape(w: int = 480, h: int = 320) -> Image.Image:
    """Sky, sun, three mountain ridges, a lake with a reflection and a meadow with trees."""
    rng = np.random.default_rng(RNG_SEED)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = int(h * 0.62)
    t = yy / horizon
    sky = np.stack([0.35 + 0.5 * t, 0.55 + 0.35 * t, 0.95 - 0.1 * t], axis=-1)
    sun = np.exp(-((xx - w * 0.72) ** 2 + (yy - h * 0.22) ** 2) / (2 * 18.0**2))[..., None]
    img = np.clip(sky + sun * np.array([0.6, 0.45, 0.1]), 0, 1)
    clouds = _smooth_noise(rng, h, w, 40) * _smooth_noise(rng, h, w, 12)
    img = img + (np.clip(clouds - 0.35, 0, 1) * (yy < horizon * 0.6))[..., None] * 0.9
    for depth, (base, rough, colour) in enumerate(
        [(0.40, 60, (0.45, 0.5, 0.65)), (0.48, 40, (0.3, 0.4, 0.45)), (0.56, 25, (0.2, 0.35, 0.25))]
    ):
        profile = _smooth_noise(rng, 1, w, rough)[0] * h * (0.22 - 0.05 * depth) + h * base
        mask = (yy > profile[None, :] - h * 0.18) & (yy < horizon)
        shade = 0.85 + 0.3 * _smooth_noise(rng, h, w, 8)[..., None]
        img = np.where(mask[..., None], np.array(colour) * shade, img)
    lake = (yy >= horizon) & (yy < h * 0.8)
    mirror = np.clip(2 * horizon - yy, 0, h - 1).astype(int)
    reflection = img[mirror, xx.astype(int)] * np.array([0.7, 0.8, 0.95])
    ripple = 0.06 * np.sin(yy * 0.9 + 3 * _smooth_noise(rng, h, w, 20))[..., None]
    img = np.where(lake[..., None], reflection + ripple, img)
    meadow = yy >= h * 0.8
    grass = np.array([0.25, 0.5, 0.15]) * (0.75 + 0.5 * _smooth_noise(rng, h, w, 6)[..., None])
    img = np.where(meadow[..., None], grass, img)
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    for x in rng.integers(10, w - 10, 9):
        top = int(h * 0.8) - int(rng.integers(30, 60))
        draw.rectangle([x - 2, int(h * 0.8) - 8, x + 2, int(h * 0.86)], fill=(80, 55, 30))
        draw.polygon([(x, top), (x - 14, int(h * 0.8)), (x + 14, int(h * 0.8))], fill=(30, 70, 35))
    return out.filter(ImageFilter.SMOOTH)


def _wobbly(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], rng: np.random.Generator, width: int = 3):
    # Hand-drawn look: split every segment and jitter the joints by a pixel or two.
    path: list[tuple[float, float]] = []
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        for s in np.linspace(0, 1, 6, endpoint=False):
            path.append((x0 + (x1 - x0) * s + rng.normal(0, 0.8), y0 + (y1 - y0) * s + rng.normal(0, 0.8)))
    path.append(points[-1])
    draw.line(path, fill=0, width=width, joint="curve")


def shoe_sketch(size: int = 256) -> Image.Image:
    """A sneaker outline: sole, toe cap, laces, heel tab."""
    rng = np.random.default_rng(RNG_SEED + 1)
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    k = size / 256
    P = lambda pts: [(x * k, y * k) for x, y in pts]  # noqa: E731
    _wobbly(d, P([(30, 170), (40, 110), (80, 95), (120, 120), (170, 140), (215, 150), (232, 168), (228, 185),
                  (30, 185), (30, 170)]), rng)
    _wobbly(d, P([(30, 185), (30, 198), (230, 198), (228, 185)]), rng)
    _wobbly(d, P([(170, 140), (175, 160), (215, 168), (232, 168)]), rng, width=2)
    for i in range(4):
        _wobbly(d, P([(92 + 16 * i, 104 + 8 * i), (104 + 16 * i, 124 + 7 * i)]), rng, width=2)
    _wobbly(d, P([(40, 110), (35, 92), (55, 88), (80, 95)]), rng, width=2)
    _wobbly(d, P([(60, 150), (150, 160)]), rng, width=2)
    return img.convert("RGB")


def house_sketch(size: int = 256) -> Image.Image:
    """A house: walls, roof, door, two windows, chimney."""
    rng = np.random.default_rng(RNG_SEED + 2)
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    k = size / 256
    P = lambda pts: [(x * k, y * k) for x, y in pts]  # noqa: E731
    _wobbly(d, P([(50, 120), (50, 220), (206, 220), (206, 120)]), rng)
    _wobbly(d, P([(35, 125), (128, 45), (221, 125), (35, 125)]), rng)
    _wobbly(d, P([(110, 220), (110, 160), (146, 160), (146, 220)]), rng)
    for x0 in (66, 162):
        _wobbly(d, P([(x0, 140), (x0 + 30, 140), (x0 + 30, 170), (x0, 170), (x0, 140)]), rng, width=2)
        _wobbly(d, P([(x0 + 15, 140), (x0 + 15, 170)]), rng, width=2)
    _wobbly(d, P([(165, 78), (165, 50), (185, 50), (185, 95)]), rng)
    _wobbly(d, P([(10, 225), (246, 225)]), rng, width=2)
    return img.convert("RGB")


def logo_rgba(size: int = 128) -> Image.Image:
    """A soft-edged round badge on a transparent background (tests alpha handling)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    r = np.hypot(xx - c, yy - c)
    alpha = np.clip((size * 0.45 - r) / 1.5, 0, 1)
    ring = np.clip(1 - np.abs(r - size * 0.33) / 3, 0, 1)
    rgb = np.stack([0.2 + 0.6 * xx / size, 0.3 + 0.2 * yy / size, 0.85 - 0.5 * xx / size], axis=-1)
    rgb = rgb * (1 - ring[..., None]) + ring[..., None]
    star = (np.abs(xx - c) + np.abs(yy - c) < size * 0.16) | ((np.abs(xx - c) < 3) & (np.abs(yy - c) < size * 0.26))
    rgb[star] = (1.0, 0.9, 0.3)
    arr = np.dstack([rgb, alpha]) * 255
    return Image.fromarray(np.round(arr).astype(np.uint8))  # (H, W, 4) -> RGBA


def gray16(w: int = 96, h: int = 64) -> Image.Image:
    """A 16-bit grayscale ramp with fine rings: values an 8-bit image cannot hold."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = xx / (w - 1)
    rings = 0.08 * np.sin(np.hypot(xx - w / 2, yy - h / 2) / 2.5)
    arr = np.clip(0.05 + 0.85 * ramp + rings, 0, 1) * 65535
    return Image.fromarray(np.round(arr).astype(np.uint16))  # uint16 (H, W) -> I;16


def main() -> None:
    land = landscape()
    land.save(HERE / "landscape.jpg", quality=88, optimize=True)
    land.resize((160, 107), Image.LANCZOS).save(HERE / "small_landscape.png", optimize=True)
    shoe_sketch().save(HERE / "shoe_sketch.png", optimize=True)
    house_sketch().save(HERE / "house_sketch.png", optimize=True)
    logo_rgba().save(HERE / "logo_rgba.png", optimize=True)
    gray16().save(HERE / "gray16.png")


if __name__ == "__main__":
    main()

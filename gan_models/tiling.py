"""Run a network on an image of any size in fixed-size tiles, blended without seams.

Pure numpy around a callable `fn` (a backend): no model, device or framework knowledge here. The output canvas
lives in host memory; only one tile at a time goes through `fn`, so working memory is bounded by the tile size,
not the image size. Every call of `fn` sees the same (N, C, tile, tile) shape, which keeps ONNX sessions and cuDNN
autotuning on one shape. Neighbouring tiles overlap; in the overlap each tile's outer margin (where the network saw
padding instead of image) is dropped and the rest is cross-faded with a cosine ramp, so no seams show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np

from .errors import InvalidTileError

# Bytes of working memory per *input* pixel for a generator of ~64 channels: activations of a few layers in
# float32 at input resolution, plus the upsampling stages at scale² resolution. Deliberately generous.
_BYTES_PER_PIXEL = 4 * 64 * 3
_MIN_TILE = 64


def parse_tile(value: str | int | None) -> int | Literal["auto"] | None:
    """A tile size as users type it: "auto" → "auto"; None, "none", 0 or "0" → None (no tiling); "256" → 256.

    Raises:
        InvalidTileError: anything else (negative numbers included); one line naming the value.
    """
    text = "none" if value is None else str(value).strip().lower()
    if text in ("auto", "none"):
        return "auto" if text == "auto" else None
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size < 0:
        raise InvalidTileError(f"tile must be auto, none (or 0) or a size in pixels, not {value!r}")
    return size or None


def auto_tile(h: int, w: int, *, scale: int, budget_bytes: int, multiple: int) -> int | None:
    """The tile size for an h x w input under a memory budget, or None when the whole image fits.

    Parameters:
        h, w: input size in pixels.
        scale: the model's upscale factor (its late layers run at scale² the pixels).
        budget_bytes: working memory the network may use (free CUDA memory, or a CPU budget).
        multiple: tiles are multiples of this (the model's size multiple).
    """
    per_pixel = _BYTES_PER_PIXEL * max(1, scale * scale)
    if h * w * per_pixel <= budget_bytes:
        return None
    side = int(math.sqrt(budget_bytes / per_pixel))
    step = max(1, multiple)
    side = max((side // step) * step, -(-_MIN_TILE // step) * step)
    return min(side, -(-max(h, w) // step) * step)


def run_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    tile: int,
    overlap: int = 16,
    scale: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Apply `fn` to `x` tile by tile and stitch the results.

    Parameters:
        fn: maps (N, C, tile, tile) float32 → (N, C', tile*scale, tile*scale) float32.
        x: (N, C, H, W) float32, any H, W ≥ 1 (inputs smaller than a tile are reflect-padded to one).
        tile: tile side in input pixels; every call of `fn` gets exactly tile x tile.
        overlap: input pixels shared by neighbouring tiles; a quarter of it on each side is dropped as
            margin and the middle half is cross-faded. Clamped so tiles still advance.
        scale: output pixels per input pixel.
        progress: called as progress(done, total) after each tile.

    Returns:
        (N, C', H*scale, W*scale) float32.
    """
    if tile < 1:
        raise ValueError(f"tile must be positive, not {tile}")
    n, _, h, w = x.shape
    overlap = max(0, min(int(overlap), tile // 2))
    ph, pw = max(h, tile), max(w, tile)
    if (ph, pw) != (h, w):
        x = np.pad(x, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="reflect")
    ys, xs = _starts(ph, tile, overlap), _starts(pw, tile, overlap)
    margin, band = overlap // 4, overlap - 2 * (overlap // 4)
    out: np.ndarray | None = None
    weight = np.zeros((ph * scale, pw * scale), dtype=np.float32)  # (H*s, W*s) sum of blend weights
    total, done = len(ys) * len(xs), 0
    for top in ys:
        wy = _ramp(tile, scale, margin, band, first=top == 0, last=top + tile >= ph)
        for left in xs:
            wx = _ramp(tile, scale, margin, band, first=left == 0, last=left + tile >= pw)
            y = np.asarray(fn(np.ascontiguousarray(x[:, :, top:top + tile, left:left + tile])), dtype=np.float32)
            if y.shape[-2:] != (tile * scale, tile * scale):
                raise ValueError(f"fn returned {y.shape} for a {tile}x{tile} tile at scale {scale}")
            if out is None:
                out = np.zeros((n, y.shape[1], ph * scale, pw * scale), dtype=np.float32)
            mask = wy[:, None] * wx[None, :]  # (t*s, t*s)
            t0, l0 = top * scale, left * scale
            out[:, :, t0:t0 + tile * scale, l0:l0 + tile * scale] += y * mask
            weight[t0:t0 + tile * scale, l0:l0 + tile * scale] += mask
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None  # at least one tile always runs
    out /= np.maximum(weight, 1e-8, out=weight)  # in place: no second (H*s, W*s) buffer
    return np.ascontiguousarray(out[:, :, : h * scale, : w * scale])


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    # Tiles advance by tile - overlap; the last one is aligned to the far edge so none runs off the image.
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(tile: int, scale: int, margin: int, band: int, *, first: bool, last: bool) -> np.ndarray:
    """1-D blend weights for one tile side, in output pixels.

    Sides at the image border keep full weight; inner sides get `margin` zeros (the network saw padding there)
    and then a raised-cosine rise over `band`, which meets the neighbour's fall over the same pixels.
    """
    length = tile * scale
    ramp = np.ones(length, dtype=np.float32)
    m, b = margin * scale, band * scale
    if b > 0:
        rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(b, dtype=np.float32) + 0.5) / b)).astype(np.float32)
    else:
        rise = np.zeros(0, dtype=np.float32)
    if not first:
        ramp[:m] = 0.0
        ramp[m:m + b] = np.minimum(ramp[m:m + b], rise)
    if not last:
        ramp[length - m:] = 0.0
        ramp[length - m - b:length - m] = np.minimum(ramp[length - m - b:length - m], rise[::-1])
    return ramp

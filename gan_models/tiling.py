"""Run a network on an image of any size in fixed-size tiles, blended without seams.

    run_array(backend, x, spec, tile=256)   # pad to the size multiple, tile, run, halve the tile on OOM, crop

Pure numpy around a callable `fn` (a backend): no model, device or framework knowledge here; the model's numbers
come from any object with `scale`, `size_multiple` and `tile_overlap` (a ModelSpec). This is the array path that
the Translator and the runtimes' parity checks and tournament share, below both. The output canvas
lives in host memory; only one tile at a time goes through `fn`, so working memory is bounded by the tile size,
not the image size. Every call of `fn` sees the same (N, C, tile, tile) shape, which keeps ONNX sessions and cuDNN
autotuning on one shape. Neighbouring tiles overlap; in the overlap each tile's outer margin (where the network saw
padding instead of image) is dropped and the rest is cross-faded with a cosine ramp, so no seams show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np

from .errors import BackendOutOfMemory, InvalidTileError

# Bytes of working memory per *input* pixel for a generator of ~64 channels: activations of a few layers in
# float32 at input resolution, plus the upsampling stages at scale² resolution. Deliberately generous.
_BYTES_PER_PIXEL = 4 * 64 * 3
MIN_TILE = 64  # the smallest tile run: a requested one is rounded up to it, out-of-memory halving stops above it
# Reflect-pad a whole image to at least this side: InstanceNorm needs more than one pixel at the bottleneck, so a
# 1x1 or 70x5 input must not reach the network at that size.
MIN_SIDE = 32

Progress = Callable[[int, int], None]


class Geometry(Protocol):
    """The model numbers the array path needs (ModelSpec has them)."""

    @property
    def scale(self) -> int: ...
    @property
    def size_multiple(self) -> int: ...
    @property
    def tile_overlap(self) -> int: ...


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


def requested_tile(tile: int | None, multiple: int) -> int | None:
    """A tile size asked for (None or 0: the whole image) as it runs: a multiple of `multiple`, at least MIN_TILE."""
    if not tile:
        return None
    return max(round_down(tile, multiple), round_up(MIN_TILE, multiple))


def run_array(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, geometry: Geometry, *, tile: int | None,
              progress: Progress | None = None) -> np.ndarray:
    """(1, C, H, W) float32 → (1, C', H*scale, W*scale) through `fn`; any H, W ≥ 1.

    Parameters:
        fn: the backend: (N, C, h, w) float32 → (N, C', h*scale, w*scale); one `fn` runs the whole call, also across
            out-of-memory retries.
        geometry: scale, size multiple and tile overlap of the model (its spec).
        tile: tile side in input pixels, exactly as run (see `requested_tile`); None runs the whole image,
            reflect-padded to the size multiple and to at least MIN_SIDE.
        progress: called as progress(done, total).

    On BackendOutOfMemory the tile is halved (the whole image counts as one tile of its long side) down to MIN_TILE;
    below that the error is raised.
    """
    h, w = x.shape[2:]
    s, m = geometry.scale, geometry.size_multiple
    while True:
        try:
            if tile is None:
                y = fn(_pad_whole(x, m))
                if progress is not None:
                    progress(1, 1)
            else:
                overlap = min(geometry.tile_overlap, max(0, (tile - 1) // 2 - 1))
                y = run_tiled(fn, x, tile=tile, overlap=overlap, scale=s, progress=progress)
            break
        except BackendOutOfMemory:
            smaller = round_down((tile or round_down(max(h, w), m)) // 2, m)
            if smaller < max(MIN_TILE, m):
                raise
            tile = smaller
    return np.ascontiguousarray(y[:, :, : h * s, : w * s], dtype=np.float32)


def round_down(value: int, multiple: int) -> int:
    return (value // multiple) * multiple


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_whole(x: np.ndarray, multiple: int) -> np.ndarray:
    h, w = x.shape[2:]
    target_h, target_w = round_up(max(h, MIN_SIDE), multiple), round_up(max(w, MIN_SIDE), multiple)
    if (target_h, target_w) == (h, w):
        return x
    padded = np.pad(x, ((0, 0), (0, 0), (0, target_h - h), (0, target_w - w)), mode="reflect")
    return np.ascontiguousarray(padded, dtype=np.float32)


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
    side = max((side // step) * step, round_up(MIN_TILE, step))
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

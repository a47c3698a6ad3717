"""PIL images <-> float arrays, with everything users expect kept: orientation, alpha, grayscale, 16-bit, ICC, EXIF.

    load_image ─▶ split_image ─▶ rgb (H, W, 3) float32 [0, 1] + alpha (H, W) | None + ImageMeta
                                         ... model ...
    merge_image(rgb', alpha', meta) ─▶ PIL image in the input's kind (L / LA / I;16 / RGB / RGBA)

Pure functions only; nothing here knows about models.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, InvalidImageError
from .files import atomic_write

# Files the CLI, evaluation and training pick up from folders (GIF: its first frame, as load_image reads it).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".webm", ".mov", ".mkv", ".gif"})  # gan_models.video; a GIF is both
DEFAULT_MAX_PIXELS = 50_000_000  # ~7071 x 7071; the guard runs on the header, before any pixel is decoded
_NOTES_KEY = "gan_models.notes"
_FRAMES_KEY = "gan_models.n_frames"
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


@dataclass(frozen=True)
class ImageMeta:
    """What `merge_image` needs to give the result back in the input's kind.

    Parameters:
        mode: PIL mode of the (orientation-corrected) input.
        size: (width, height) of the input.
        has_alpha: the input carries transparency (RGBA, LA, PA or a palette with a transparent index).
        grayscale: the input is single-channel; results are returned as grayscale.
        bit_depth: 8 or 16 (16-bit grayscale PNGs come back 16-bit).
        icc_profile: the input's RGB/gray ICC profile, kept on output (CMYK profiles are not: output is RGB).
        exif: the input's EXIF with the orientation already applied.
        n_frames: frames in the file (animated GIF/WebP/APNG use the first one).
        notes: plain-language remarks for the user ("animated: used frame 1 of 12", "CMYK converted to RGB").
    """

    mode: str
    size: tuple[int, int]
    has_alpha: bool
    grayscale: bool
    bit_depth: int
    icc_profile: bytes | None
    exif: bytes | None
    n_frames: int = 1
    notes: tuple[str, ...] = ()


def load_image(
    src: str | Path | bytes | BinaryIO | Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open, guard, decode and orient an image.

    The pixel count is checked against `max_pixels` from the header, before decoding, so a small file that
    declares 30000x30000 costs nothing. Animated files give their first frame (and say so in `split_image`'s
    notes). EXIF orientation is applied and removed from the EXIF that is kept.

    Raises:
        InvalidImageError: empty, truncated, corrupt or not an image; the message names the problem.
        ImageTooLargeError: more than `max_pixels` pixels.
    """
    name = _describe(src)
    if isinstance(src, Image.Image):
        img = src
    else:
        if isinstance(src, (bytes, bytearray)):
            src = io.BytesIO(src)
        if isinstance(src, io.BytesIO):
            if src.getbuffer().nbytes == 0:
                raise InvalidImageError(f"{name} is empty (0 bytes)")
        elif isinstance(src, (str, Path)):
            path = Path(src)
            if not path.is_file():
                raise InvalidImageError(f"{name} does not exist or is not a file")
            if path.stat().st_size == 0:
                raise InvalidImageError(f"{name} is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                # Our own max_pixels guard decides; PIL's warning threshold is lower than ours.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(src)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(_bomb_message(name, exc, max_pixels)) from exc
        except UnidentifiedImageError as exc:
            raise InvalidImageError(f"{name} is not an image file or its format is not supported") from exc
        except OSError as exc:
            raise InvalidImageError(f"{name} cannot be read: {exc}") from exc
    w, h = img.size
    if w < 1 or h < 1:
        raise InvalidImageError(f"{name} has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of {max_pixels / 1e6:.1f} megapixels"
        )
    n_frames = int(getattr(img, "n_frames", 1) or 1)
    notes: list[str] = list(img.info.get(_NOTES_KEY, ()))
    try:
        if n_frames > 1:
            img.seek(0)
            notes.append(f"animated image: used the first of its {n_frames} frames")
        img.load()
        oriented = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(_bomb_message(name, exc, max_pixels)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"{name} is truncated or corrupt ({exc})") from exc
    if oriented is img and n_frames > 1:
        oriented = img.copy()  # detach from the multi-frame file
    oriented.info[_NOTES_KEY] = tuple(notes)
    oriented.info[_FRAMES_KEY] = n_frames
    return oriented


def _bomb_message(name: str, exc: Exception, max_pixels: int) -> str:
    # PIL refuses before we see the size; its message carries the pixel count.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
    return f"{name} declares {size}, over the limit of {max_pixels / 1e6:.1f} megapixels (decompression bomb guard)"


def _describe(src: object) -> str:
    if isinstance(src, (str, Path)):
        return f"'{Path(src).name}'"
    if isinstance(src, Image.Image):
        return "the image"
    name = getattr(src, "name", None)
    return f"'{Path(name).name}'" if isinstance(name, str) else "the uploaded file"


def split_image(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None, ImageMeta]:
    """A PIL image → (rgb float32 (H, W, 3) in [0, 1], alpha float32 (H, W) in [0, 1] or None, meta).

    Grayscale is replicated to three channels, palette/CMYK/YCbCr/LAB/HSV become RGB, 16-bit values are scaled
    by 65535 (not clipped to 8 bits), premultiplied modes are un-premultiplied.
    """
    mode = img.mode
    notes = list(img.info.get(_NOTES_KEY, ()))
    icc = img.info.get("icc_profile") or None
    exif = _exif_bytes(img)
    bit_depth = 8
    alpha: np.ndarray | None = None
    grayscale = mode in _GRAY_MODES

    if mode == "P" or mode == "PA":
        has_transparency = mode == "PA" or "transparency" in img.info
        converted = img.convert("RGBA" if has_transparency else "RGB")
        palette_rgb = np.asarray(converted.convert("RGB"), dtype=np.uint8)
        grayscale = bool(np.all(palette_rgb[..., 0] == palette_rgb[..., 1]) and
                         np.all(palette_rgb[..., 1] == palette_rgb[..., 2]))
        img = converted
        mode = img.mode
    if mode == "CMYK":
        img = _cmyk_to_rgb(img, icc)
        icc = None  # a CMYK profile must not be attached to RGB output
        notes.append("CMYK image converted to RGB")
        mode = img.mode
    elif mode in ("YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
        mode = "RGB"
    elif mode in ("RGBa", "La"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
        mode = img.mode
    elif mode == "1":
        img = img.convert("L")
        mode = "L"

    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if mode in _SIXTEEN_BIT_MODES or peak > 255:
            bit_depth = 16
            gray = arr / 65535.0
        elif mode == "F" and peak <= 1.0:
            gray = arr
        else:
            gray = arr / 255.0
        gray = np.clip(gray, 0.0, 1.0).astype(np.float32)
        rgb = np.repeat(gray[..., None], 3, axis=2)
    elif mode == "L":
        rgb = np.repeat((np.asarray(img, dtype=np.float32) / 255.0)[..., None], 3, axis=2)
    elif mode == "LA":
        arr = np.asarray(img, dtype=np.float32) / 255.0
        rgb = np.repeat(arr[..., :1], 3, axis=2)
        alpha = arr[..., 1]
    elif mode == "RGBA":
        arr = np.asarray(img, dtype=np.float32) / 255.0
        rgb = arr[..., :3]
        alpha = arr[..., 3]
    elif mode == "RGB":
        rgb = np.asarray(img, dtype=np.float32) / 255.0
    else:
        raise InvalidImageError(f"image mode {mode!r} is not supported")

    meta = ImageMeta(
        mode=mode,
        size=img.size,
        has_alpha=alpha is not None,
        grayscale=grayscale,
        bit_depth=bit_depth,
        icc_profile=icc,
        exif=exif,
        n_frames=int(img.info.get(_FRAMES_KEY, 1)),
        notes=tuple(notes),
    )
    return np.ascontiguousarray(rgb, dtype=np.float32), alpha, meta


def _exif_bytes(img: Image.Image) -> bytes | None:
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - malformed EXIF must never stop an image from being processed
        return None
    return exif.tobytes() if len(exif) else None


def _cmyk_to_rgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    # With the file's own CMYK profile the colours are right; PIL's plain formula is the fallback.
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return img.convert("RGB")


def merge_image(rgb: np.ndarray, alpha: np.ndarray | None, meta: ImageMeta) -> Image.Image:
    """rgb (H, W, 3) in [0, 1] (+ alpha (H, W)) → a PIL image of the input's kind.

    Grayscale inputs give L (LA with alpha; I;16 when the input was 16-bit), colour gives RGB/RGBA. Alpha of
    another size is resized to the result. The ICC profile and EXIF ride along in `img.info` for `save_png`, the
    notes (see `image_notes`) for the front doors.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImageError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if alpha is not None and alpha.shape != (h, w):
        alpha = resize_alpha(alpha, (w, h))
    if meta.grayscale:
        rgb = np.clip(rgb, 0.0, 1.0)
        # ITU-R BT.601 luma, the weights PIL uses for RGB -> L
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        if meta.bit_depth == 16 and alpha is None:
            img = Image.fromarray(np.round(gray * 65535.0).astype(np.uint16))
            if img.mode != "I;16":
                img = img.convert("I;16")
        elif alpha is not None:
            img = Image.fromarray(_to_uint8(np.stack([gray, alpha], axis=-1)), mode="LA")
        else:
            img = Image.fromarray(_to_uint8(gray), mode="L")
    elif alpha is not None:
        rgba = np.empty((h, w, 4), dtype=np.uint8)
        rgba[..., :3] = _to_uint8(rgb)
        rgba[..., 3] = _to_uint8(alpha)
        img = Image.fromarray(rgba, mode="RGBA")
    else:
        img = Image.fromarray(_to_uint8(rgb), mode="RGB")
    if meta.icc_profile:
        img.info["icc_profile"] = meta.icc_profile
    if meta.exif:
        img.info["exif"] = meta.exif
    if meta.notes:
        img.info[_NOTES_KEY] = meta.notes  # so front doors can tell the user what was changed on the way
    return img


def image_notes(img: Image.Image) -> tuple[str, ...]:
    """Remarks for the user that reading `img` produced ("animated image: used the first of its 3 frames", ...).

    `load_image` attaches them, they survive PIL's convert/resize, and `merge_image` carries them onto results.
    """
    return tuple(img.info.get(_NOTES_KEY, ()))


def _to_uint8(arr: np.ndarray, rows: int = 256) -> np.ndarray:
    """[0, 1] floats → uint8 (clipped, rounded), a band of rows at a time: temporaries stay small for huge results."""
    out = np.empty(arr.shape, dtype=np.uint8)
    for top in range(0, arr.shape[0], rows):
        band = np.clip(arr[top:top + rows], 0.0, 1.0)
        band *= 255.0
        out[top:top + rows] = np.rint(band, out=band)
    return out


def to_tensor_range(rgb: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """(H, W, 3) in [0, 1] → (1, 3, H, W) float32 in the model's `value_range`."""
    lo, hi = value_range
    x = rgb.astype(np.float32, copy=False) * np.float32(hi - lo) + np.float32(lo)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def from_tensor_range(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """(1, 3, H, W) in the model's `value_range` → (H, W, 3) float32 clipped to [0, 1]."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected a (1, C, H, W) array, got shape {x.shape}")
    lo, hi = value_range
    y = np.ascontiguousarray(x[0].transpose(1, 2, 0), dtype=np.float32)
    if np.may_share_memory(y, x):  # (1, 1, H, W) transposes to a view: never edit the caller's array
        y = y.copy()
    y -= np.float32(lo)  # in place: an 8192² result is 0.8 GB per float copy
    y /= np.float32(hi - lo)
    return np.clip(y, 0.0, 1.0, out=y)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int], *,
               resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] resized to `size` (width, height), clipped to [0, 1], float32.

    Per-channel float resize keeps full precision (16-bit inputs) and avoids 8-bit banding.
    """
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c], dtype=np.float32), mode="F").resize(
        size, resample)) for c in range(rgb.shape[2])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two arrays of the same shape (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak * peak / mse))


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) alpha plane to `size` = (W, H), PIL order; bicubic in float, so edges stay smooth."""
    plane = Image.fromarray(np.ascontiguousarray(alpha, dtype=np.float32), mode="F")
    return np.clip(np.asarray(plane.resize(size, Image.Resampling.BICUBIC), dtype=np.float32), 0.0, 1.0)


def save_png(img: Image.Image, path: str | Path) -> Path:
    """Write `img` as a lossless PNG with its ICC profile and EXIF; atomic (temp file + rename).

    Raises:
        OSError: the folder is not writable or the disk is full; no partial file is left behind.
    """
    return atomic_write(Path(path), lambda tmp: write_png(img, tmp))


def write_png(img: Image.Image, dest: str | Path | BinaryIO) -> None:
    """Encode `img` as `save_png` does (same bytes) into a file or a writable stream (e.g. a pyarrow output stream);
    not atomic by itself."""
    extra: dict[str, object] = {}
    if img.info.get("icc_profile"):
        extra["icc_profile"] = img.info["icc_profile"]
    if img.info.get("exif"):
        extra["exif"] = img.info["exif"]
    img.save(dest, format="PNG", compress_level=6, **extra)


def for_display(img: Image.Image) -> Image.Image:
    """An 8-bit copy a browser shows correctly (16-bit PNGs come out white in Gradio's viewer); keeps alpha."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I") else 1.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        return img
    return img.convert("RGBA" if "transparency" in img.info or img.mode in ("PA", "RGBa") else "RGB")


def resized(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`img` at `size` (W, H) with a smooth filter; P and 1 images become RGB(A) first (PIL cannot filter them)."""
    if img.size == size:
        return img
    if img.mode in ("P", "PA", "1"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    return img.resize(size, Image.Resampling.LANCZOS)


def fit_long_side(img: Image.Image, side: int) -> Image.Image:
    """Shrink so the long side is at most `side`; smaller images are returned unchanged."""
    w, h = img.size
    k = min(1.0, side / max(w, h))
    return resized(img, (max(1, round(w * k)), max(1, round(h * k))))


MAX_ASPECT = 4  # resizing by the short side never makes the long side more than this many times it


def resize_short_side(img: Image.Image, side: int) -> Image.Image:
    """Resize (up or down) so the short side is `side`, but the long side at most MAX_ASPECT x `side`.

    Without the cap a 1x5000 strip would become 256 x 1 280 000 px before it reaches the model.
    """
    w, h = img.size
    k = min(side / min(w, h), MAX_ASPECT * side / max(w, h))
    return resized(img, (max(1, round(w * k)), max(1, round(h * k))))


def edges_from_photo(img: Image.Image, *, size: int | None = None) -> Image.Image:
    """A photo → the black-on-white edge map the sketch→photo models take (RGB, strokes 0, paper 255).

    A Canny-style detector in numpy: Gaussian blur, Sobel gradients, non-maximum suppression, hysteresis with
    thresholds from the image's own gradient percentiles (so dark and bright photos both give strokes), then
    a one-pixel dilation so strokes look like pen lines. The app's "edges from photo" helper and the pix2pix
    default's training data both come from this one function.

    Parameters:
        img: any PIL image (alpha is composited on white first).
        size: resize so the longer side is `size` pixels before detection; None keeps the size.
    """
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    rgb, _, _ = split_image(img.convert("RGB") if img.mode not in _GRAY_MODES else img)
    if size is not None:
        h, w = rgb.shape[:2]
        factor = size / max(h, w)
        new = (max(1, round(w * factor)), max(1, round(h * factor)))
        rgb = np.stack([np.asarray(Image.fromarray(rgb[..., c], mode="F").resize(new, Image.Resampling.BICUBIC))
                        for c in range(3)], axis=-1)
    gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # (H, W) in [0, 1]
    h, w = gray.shape
    radius = max(1.0, min(h, w) / 256.0)
    blurred = _gaussian_blur(gray.astype(np.float32), radius)
    p = np.pad(blurred, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.hypot(gx, gy)
    thin = _non_max_suppression(mag, gx, gy)
    nonzero = thin[thin > 0]
    if nonzero.size == 0 or float(nonzero.max()) < 0.02:
        edges = np.zeros((h, w), dtype=bool)  # a flat image has no edges: blank paper
    else:
        high = max(float(np.percentile(nonzero, 80)), 0.08)
        low = 0.4 * high
        edges = _hysteresis(thin >= high, thin >= low)
    stroke = Image.fromarray((edges * 255).astype(np.uint8), mode="L").filter(ImageFilter.MaxFilter(3))
    return ImageOps.invert(stroke).convert("RGB")


def _gaussian_blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    # Separable, edge-replicated; PIL's GaussianBlur does not take float ("F") images.
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(arr, pad, mode="edge")
        n = arr.shape[axis]
        arr = sum(t * np.take(padded, np.arange(i, i + n), axis=axis) for i, t in enumerate(taps))
    return arr.astype(np.float32)


def _non_max_suppression(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    # Keep a pixel only where it is the ridge of the gradient magnitude across the edge (4 directions).
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    p = np.pad(mag, 1, mode="constant")
    c = p[1:-1, 1:-1]
    east, west = p[1:-1, 2:], p[1:-1, :-2]
    north, south = p[:-2, 1:-1], p[2:, 1:-1]
    ne, sw = p[:-2, 2:], p[2:, :-2]
    nw, se = p[:-2, :-2], p[2:, 2:]
    horizontal = (angle < 22.5) | (angle >= 157.5)
    diag_a = (angle >= 22.5) & (angle < 67.5)
    vertical = (angle >= 67.5) & (angle < 112.5)
    diag_b = (angle >= 112.5) & (angle < 157.5)
    keep = (
        (horizontal & (c >= east) & (c >= west))
        | (diag_a & (c >= se) & (c >= nw))
        | (vertical & (c >= north) & (c >= south))
        | (diag_b & (c >= ne) & (c >= sw))
    )
    return np.where(keep, mag, 0.0).astype(np.float32)


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    # Grow strong edges into connected weak ones; bounded rounds keep it fast and deterministic.
    edges = strong.copy()
    weak_img = weak
    for _ in range(8):
        grown = np.asarray(Image.fromarray(edges.astype(np.uint8) * 255, mode="L").filter(ImageFilter.MaxFilter(3)))
        new = (grown > 0) & weak_img
        if np.array_equal(new, edges):
            break
        edges = new
    return edges

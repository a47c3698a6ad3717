"""imaging: every kind of real image in, the same kind out; bad files refused with a message that names them."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from gan_models import ImageTooLargeError, InvalidImageError
from gan_models.imaging import (
    edges_from_photo,
    from_tensor_range,
    load_image,
    merge_image,
    resize_alpha,
    save_png,
    split_image,
    to_tensor_range,
)

from .conftest import rgb_image


def _png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (the decompression-bomb shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_round_trip_rgb_is_exact():
    img = rgb_image(33, 17)
    rgb, alpha, meta = split_image(load_image(img))
    assert rgb.shape == (17, 33, 3) and rgb.dtype == np.float32 and alpha is None
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0
    out = merge_image(rgb, alpha, meta)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_tensor_range_round_trip():
    rgb = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    x = to_tensor_range(rgb, (-1.0, 1.0))
    assert x.shape == (1, 3, 5, 7) and x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_allclose(from_tensor_range(x, (-1.0, 1.0)), rgb, atol=1e-6)
    assert from_tensor_range(x * 3, (-1.0, 1.0)).max() <= 1.0  # out-of-range model output is clipped


def test_exif_orientation_is_applied_and_removed():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(buf.getvalue())
    assert loaded.size == (20, 40)
    rgb, _, meta = split_image(loaded)
    assert rgb[2, 10, 2] > 0.8 and rgb[-3, 10, 0] > 0.8  # blue stripe now on top
    assert meta.exif is None or Image.Exif().load(meta.exif) is None or Image.open(buf).getexif().get(0x0112) == 6


@pytest.mark.parametrize(
    ("mode", "out_mode", "alpha"),
    [("L", "L", False), ("LA", "LA", True), ("RGBA", "RGBA", True), ("1", "L", False), ("CMYK", "RGB", False),
     ("YCbCr", "RGB", False), ("P", "RGB", False)],
)
def test_modes_map_to_the_right_output(mode, out_mode, alpha):
    img = rgb_image(16, 12).convert(mode)
    rgb, a, meta = split_image(load_image(img))
    assert rgb.shape == (12, 16, 3) and (a is not None) == alpha and meta.has_alpha == alpha
    assert merge_image(rgb, a, meta).mode == out_mode


def test_palette_with_transparency_keeps_alpha():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    img.info["transparency"] = 1
    loaded = load_image(_png_bytes(img, transparency=1))
    rgb, alpha, meta = split_image(loaded)
    assert alpha is not None and alpha[:, :4].min() == 1.0 and alpha[:, 4:].max() == 0.0
    assert merge_image(rgb, alpha, meta).mode == "RGBA"


def test_sixteen_bit_gray_keeps_its_precision():
    ramp = np.linspace(0, 65535, 64 * 4).reshape(4, 64).astype(np.uint16)
    loaded = load_image(_png_bytes(Image.fromarray(ramp)))
    rgb, alpha, meta = split_image(loaded)
    assert meta.bit_depth == 16 and meta.grayscale and alpha is None
    assert len(np.unique(rgb[..., 0])) > 200  # more levels than 8 bits could hold in 256 px... all distinct
    out = merge_image(rgb, alpha, meta)
    assert out.mode == "I;16"
    np.testing.assert_allclose(np.asarray(out).astype(np.int64), ramp.astype(np.int64), atol=1)


def test_cmyk_jpeg_with_note():
    buf = io.BytesIO()
    rgb_image(20, 10).convert("CMYK").save(buf, format="JPEG")
    rgb, _, meta = split_image(load_image(buf.getvalue()))
    assert rgb.shape == (10, 20, 3) and "CMYK" in " ".join(meta.notes) and meta.icc_profile is None


def test_animated_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    rgb, _, meta = split_image(load_image(buf.getvalue()))
    assert meta.n_frames == 3 and "first of its 3 frames" in " ".join(meta.notes)
    assert rgb[5, 5, 0] > 0.9 and rgb[5, 5, 1] < 0.1


def test_icc_profile_survives_save_png(tmp_path):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = rgb_image(8, 8)
    rgb, alpha, meta = split_image(load_image(_png_bytes(img, icc_profile=profile)))
    path = save_png(merge_image(rgb, alpha, meta), tmp_path / "out.png")
    assert Image.open(path).info.get("icc_profile") == profile
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left behind


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "empty"), (b"this is text, not a picture\n" * 4, "not an image"),
     (_png_bytes(rgb_image(64, 64))[:200], "truncated or corrupt")],
)
def test_bad_files_name_the_problem(payload, message):
    with pytest.raises(InvalidImageError, match=message):
        load_image(payload)


def test_truncated_jpeg_and_missing_file(tmp_path):
    buf = io.BytesIO()
    rgb_image(64, 64).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InvalidImageError, match="cut.jpg"):
        load_image(path)
    with pytest.raises(InvalidImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="900.0 megapixels, over the limit"):
        load_image(_bomb_png(30000, 30000))
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        load_image(rgb_image(100, 100), max_pixels=5000)


def test_resize_alpha_is_smooth_and_bounded():
    alpha = np.zeros((4, 4), np.float32)
    alpha[:, 2:] = 1.0
    up = resize_alpha(alpha, (16, 16))
    assert up.shape == (16, 16) and up.min() >= 0.0 and up.max() <= 1.0
    assert up[:, 0].max() < 0.05 and up[:, -1].min() > 0.95


def test_edges_from_photo_draws_black_strokes_on_white():
    img = Image.new("RGB", (64, 64), (200, 180, 150))
    img.paste((20, 30, 40), (16, 16, 48, 48))
    edges = edges_from_photo(img)
    arr = np.asarray(edges)
    assert edges.mode == "RGB" and edges.size == (64, 64)
    ink = arr[..., 0] < 128
    assert 0.02 < ink.mean() < 0.25  # outlines, not a filled shape
    assert ink[14:19, 20:44].any() and not ink[28:36, 28:36].any() and not ink[:6, :6].any()
    flat = np.asarray(edges_from_photo(Image.new("L", (32, 32), 90)))
    assert flat.min() == 255  # nothing to draw on a flat image
    assert edges_from_photo(img, size=32).size == (32, 32)

"""tiling: fixed tile shapes, exact stitching of local ops, no seams on a real-size SR net, bounded work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_models.archs import build_arch
from gan_models.errors import InvalidTileError
from gan_models.tiling import auto_tile, parse_tile, run_tiled


def _nearest_x2(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=2).repeat(2, axis=3)


@pytest.mark.parametrize("size", [(1, 1), (5, 300), (64, 64), (130, 97)])
def test_pointwise_fn_is_stitched_exactly_with_fixed_tile_shapes(size):
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    shapes: list[tuple[int, ...]] = []

    def fn(t: np.ndarray) -> np.ndarray:
        shapes.append(t.shape)
        return _nearest_x2(t * 2.0 - 1.0)

    out = run_tiled(fn, x, tile=64, overlap=16, scale=2)
    assert out.shape == (1, 3, size[0] * 2, size[1] * 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, _nearest_x2(x * 2.0 - 1.0), atol=1e-6)
    assert set(shapes) == {(1, 3, 64, 64)}  # one shape for the ONNX session, whatever the image size


def test_progress_counts_every_tile():
    calls: list[tuple[int, int]] = []
    run_tiled(lambda t: t, np.zeros((1, 3, 100, 150), np.float32), tile=64, overlap=16,
              progress=lambda d, n: calls.append((d, n)))
    assert calls[-1][0] == calls[-1][1] == len(calls) == 2 * 3


def test_no_seams_on_a_random_init_compact_sr_net():
    torch.manual_seed(0)
    net = build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=48, num_conv=16, upscale=4,
                     act_type="prelu").eval()

    def fn(t: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(t)).numpy()

    x = np.random.default_rng(1).random((1, 3, 150, 130), dtype=np.float32)
    whole = fn(x)
    tiled = run_tiled(fn, x, tile=64, overlap=16, scale=4)  # the specs' default overlap
    border = 16 * 4  # the image border itself differs (tiles there see the same zero padding, but not all of it)
    diff = np.abs(whole - tiled)[..., border:-border, border:-border]
    assert diff.max() < 1 / 255, diff.max()


def test_output_memory_is_the_canvas_not_copies_of_the_image():
    # Each call gets one tile; nothing sized like the whole image is passed to fn.
    biggest = []
    run_tiled(lambda t: (biggest.append(t.nbytes), t)[1], np.zeros((1, 3, 500, 500), np.float32), tile=128)
    assert max(biggest) == 3 * 128 * 128 * 4


def test_auto_tile():
    assert auto_tile(100, 100, scale=4, budget_bytes=2**30, multiple=1) is None
    tile = auto_tile(4000, 3000, scale=4, budget_bytes=2**30, multiple=4)
    assert tile is not None and tile % 4 == 0 and 64 <= tile < 4000
    assert auto_tile(4000, 3000, scale=4, budget_bytes=2**31, multiple=4) > tile  # more memory, bigger tiles
    assert auto_tile(4000, 3000, scale=4, budget_bytes=1, multiple=4) == 64  # never below the minimum


def test_bad_tile_is_refused():
    with pytest.raises(ValueError, match="tile"):
        run_tiled(lambda t: t, np.zeros((1, 3, 8, 8), np.float32), tile=0)
    with pytest.raises(ValueError, match="returned"):
        run_tiled(lambda t: t[:, :, :4], np.zeros((1, 3, 8, 8), np.float32), tile=8)


@pytest.mark.parametrize(("value", "expected"), [
    ("auto", "auto"), ("AUTO", "auto"), (None, None), ("none", None), ("None", None), (0, None), ("0", None),
    ("256", 256), (128, 128),
])
def test_parse_tile_accepts_what_the_app_and_cli_accept(value, expected):
    assert parse_tile(value) == expected


@pytest.mark.parametrize("value", ["-3", -1, "big", "1.5", ""])
def test_parse_tile_refuses_with_one_line(value):
    with pytest.raises(InvalidTileError, match=r"^tile must be auto, none \(or 0\) or a size in pixels, not "):
        parse_tile(value)

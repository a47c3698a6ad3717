"""Bad and unusual inputs through every front door: the library Translator, the CLI and the three app endpoints.

Each case of MATRIX either gives the right result (size, mode, a note where the input was changed on the way) or a
one-line error that names the problem. After every app error the same server answers a good request. One app server
(in-process, tiny models, Hub offline) serves the whole module. The table in the README is this matrix.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import EMPTY_CANVAS_MESSAGE
from gan_models import GanModelsError, Translator, imaging
from gan_models.cli import main as cli_main
from gan_models.runtimes import TorchBackend
from gan_models.weights import load_model

from .conftest import app_settings, rgb_image, serve

MAX_STYLE_SIDE = 64  # the test server's cap on "original" style output
SKETCH_SIZE = 64  # the tiny sketch model's training size (input_size)
MAX_FILE_SIZE = "1mb"


def _png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    # Incompressible pixels, so that half a file really is half the image data.
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _bomb_png(width: int, height: int) -> bytes:
    """A valid ~100-byte PNG whose IHDR declares width x height, written by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 16), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    frames[0].paste((250, 250, 250), (4, 4, 12, 12))
    buf = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=80, loop=0, **extra)
    return buf.getvalue()


def _gray16() -> bytes:
    ramp = np.linspace(0, 65535, 24 * 16).reshape(16, 24).astype(np.uint16)
    return _png(Image.fromarray(ramp))


def _palette_transparent() -> bytes:
    img = rgb_image(24, 16).convert("P", palette=Image.Palette.ADAPTIVE, colors=15)  # indices 0..14
    arr = np.asarray(img).copy()
    arr[:, :12] = 15  # left half: index 15, the transparent one
    out = Image.fromarray(arr, mode="P")
    out.putpalette(img.getpalette()[: 15 * 3] + [0, 0, 0])
    return _png(out, transparency=15)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 24x16, shown rotated 90° clockwise: 16x24
    return _jpeg(rgb_image(24, 16), exif=exif.tobytes())


@dataclass(frozen=True)
class Case:
    """One bad or unusual input.

    Parameters:
        name: test id and table row.
        data: the file's bytes.
        suffix: the file's extension (what a user's file would be called).
        size: (W, H) after orientation, for inputs that must work; None for inputs that must be refused.
        mode: PIL mode of the full-size result (library, CLI, upscale download); None for refusals.
        error: regex the one-line error must match; None for inputs that must work.
        note: the remark the result must carry (library), print (CLI) or show (app info line).
        sketch_error: regex of the error /sketch_to_photo gives where the other doors succeed.
    """

    name: str
    data: bytes
    suffix: str
    size: tuple[int, int] | None = None
    mode: str | None = None
    error: str | None = None
    note: str | None = None
    sketch_error: str | None = None


def _cases() -> list[Case]:
    png = _png(_noise(64, 48))
    jpeg = _jpeg(_noise(64, 48))
    return [
        Case("zero-byte", b"", ".png", error=r"empty \(0 bytes\)"),
        Case("truncated-png", png[: len(png) // 2], ".png", error="truncated or corrupt"),
        Case("truncated-jpeg", jpeg[: len(jpeg) // 2], ".jpg", error="truncated or corrupt"),
        Case("text-as-png", b"just some notes, not an image\n" * 20, ".png", error="not an image file"),
        Case("1x1", _png(rgb_image(1, 1)), ".png", size=(1, 1), mode="RGB", sketch_error=EMPTY_CANVAS_MESSAGE),
        Case("2x2", _png(rgb_image(2, 2)), ".png", size=(2, 2), mode="RGB"),
        Case("strip-1x5000", _png(rgb_image(1, 5000)), ".png", size=(1, 5000), mode="RGB"),
        Case("bomb-30000x30000", _bomb_png(30000, 30000), ".png", error="megapixels.*decompression bomb"),
        Case("animated-gif", _animated("GIF"), ".gif", size=(24, 16), mode="RGB", note="first of its 3 frames"),
        Case("animated-webp", _animated("WEBP"), ".webp", size=(24, 16), mode="RGB", note="first of its 3 frames"),
        Case("cmyk-jpeg", _jpeg(rgb_image(24, 16).convert("CMYK")), ".jpg", size=(24, 16), mode="RGB",
             note="CMYK image converted to RGB"),
        Case("gray16-png", _gray16(), ".png", size=(24, 16), mode="I;16"),
        Case("palette-transparency", _palette_transparent(), ".png", size=(24, 16), mode="RGBA"),
        Case("exif-rotated-jpeg", _exif_rotated(), ".jpg", size=(16, 24), mode="RGB"),
    ]


MATRIX = {case.name: case for case in _cases()}
GOOD = [c for c in MATRIX.values() if c.error is None]
BAD = [c for c in MATRIX.values() if c.error is not None]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {}
    for case in MATRIX.values():
        paths[case.name] = root / f"{case.name}{case.suffix}"
        paths[case.name].write_bytes(case.data)
    return paths


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_mode(img: Image.Image, mode: str) -> None:
    if mode == "I;16":
        assert img.mode in ("I;16", "I") and np.asarray(img).max() > 255, img.mode  # real 16-bit values
    else:
        assert img.mode == mode


def _one_line(message: str, pattern: str) -> None:
    import re

    assert re.search(pattern, message), message
    assert "\n" not in message.strip() and "Traceback" not in message, message


# --- library ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def translators(tiny_specs) -> dict[str, Translator]:
    return {task: Translator(spec, TorchBackend(load_model(spec, allow_fallback=False).module, device="cpu"))
            for task, spec in tiny_specs.items()}


@pytest.mark.parametrize("task", ["upscale", "style", "sketch2photo"])
@pytest.mark.parametrize("name", list(MATRIX))
def test_library(translators, inputs, name, task):
    case, translator = MATRIX[name], translators[task]
    before = _digest(inputs[name])
    if case.error is not None:
        with pytest.raises(GanModelsError) as info:
            translator(inputs[name])
        _one_line(str(info.value), case.error)
        assert inputs[name].name in str(info.value)  # the message names the file
    else:
        out = translator(inputs[name])
        s = translator.spec.scale
        assert out.size == (case.size[0] * s, case.size[1] * s)
        _check_mode(out, case.mode)
        notes = " ".join(imaging.image_notes(out))
        assert case.note is None or case.note in notes, notes
    assert _digest(inputs[name]) == before


# --- CLI ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MATRIX))
def test_cli(tiny_specs, inputs, tmp_path, capsys, name):
    case = MATRIX[name]
    before = _digest(inputs[name])
    out_dir = tmp_path / "out"
    code = cli_main(["run", str(tiny_specs["upscale"].bundled.parent), str(inputs[name]), "-o", str(out_dir),
                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    written = sorted(out_dir.iterdir())
    if case.error is not None:
        assert code == 1 and written == []
        skipped = [line for line in err.splitlines() if line.startswith(f"skipped {inputs[name]}")]
        assert len(skipped) == 1, err
        _one_line(skipped[0], case.error)
    else:
        assert code == 0 and [p.name for p in written] == [f"{name}_tiny-upscale.png"], err
        with Image.open(written[0]) as out:
            assert out.size == (case.size[0] * 4, case.size[1] * 4)
            _check_mode(out, case.mode)
        assert case.note is None or case.note in err, err
    assert _digest(inputs[name]) == before


# --- app ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tiny_specs, tmp_path_factory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("bad_inputs_app")
    config = app_settings(concurrency=2, max_style_side=MAX_STYLE_SIDE, max_file_size=MAX_FILE_SIZE, retry_after_s=600)
    with serve({spec.id: spec for spec in tiny_specs.values()}, config, root / "hf") as url:
        yield Client(url, verbose=False, download_files=str(root / "downloads"))


def _fit_long(size: tuple[int, int], side: int) -> tuple[int, int]:
    w, h = size
    k = min(1.0, side / max(w, h))
    return max(1, round(w * k)), max(1, round(h * k))


def _sketch_size(size: tuple[int, int]) -> tuple[int, int]:
    # short side to the model's size, long side at most MAX_ASPECT times that (imaging.MAX_ASPECT)
    from gan_models.imaging import MAX_ASPECT

    w, h = size
    k = min(SKETCH_SIZE / min(w, h), MAX_ASPECT * SKETCH_SIZE / max(w, h))
    return max(1, round(w * k)), max(1, round(h * k))


def _style(client: Client, path: Path) -> tuple[Image.Image, str]:
    out, info = client.predict(handle_file(path), "tiny-style", "original", api_name="/style_transfer")
    return Image.open(out), info


def _sketch(client: Client, path: Path) -> tuple[Image.Image, str]:
    canvas = {"background": handle_file(path), "layers": [], "composite": None}
    out, info = client.predict(canvas, "tiny-sketch2photo", True, api_name="/sketch_to_photo")
    return Image.open(out), info


def _upscale(client: Client, path: Path) -> tuple[Image.Image, str]:
    _, png, info = client.predict(handle_file(path), "tiny-upscale", 4, "auto", api_name="/upscale")
    return Image.open(png), info


ENDPOINTS: dict[str, Callable[[Client, Path], tuple[Image.Image, str]]] = {
    "/style_transfer": _style,
    "/sketch_to_photo": _sketch,
    "/upscale": _upscale,
}


def _expected(endpoint: str, case: Case) -> tuple[tuple[int, int], str]:
    """(size, mode) of what the endpoint returns for a case that must work."""
    assert case.size is not None and case.mode is not None
    if endpoint == "/upscale":
        return (case.size[0] * 4, case.size[1] * 4), case.mode  # the lossless full-size download
    if endpoint == "/sketch_to_photo":
        return _sketch_size(case.size), "RGB"
    return _fit_long(case.size, MAX_STYLE_SIDE), "L" if case.mode == "I;16" else case.mode  # 8-bit for display


def _still_serves(client: Client, endpoint: str, good: Path) -> None:
    img, _ = ENDPOINTS[endpoint](client, good)
    assert img.size == _expected(endpoint, MATRIX["2x2"])[0]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("name", list(MATRIX))
def test_app(client, inputs, endpoint, name):
    case = MATRIX[name]
    error = case.sketch_error if endpoint == "/sketch_to_photo" and case.sketch_error else case.error
    if error is not None:
        with pytest.raises(AppError) as info:
            ENDPOINTS[endpoint](client, inputs[name])
        _one_line(str(info.value), error)
        _still_serves(client, endpoint, inputs["2x2"])
    else:
        img, info = ENDPOINTS[endpoint](client, inputs[name])
        size, mode = _expected(endpoint, case)
        assert img.size == size
        _check_mode(img, mode)
        assert case.note is None or case.note in info, info


@pytest.mark.parametrize("canvas", ["none", "blank-background", "blank-composite"])
def test_app_empty_sketchpad(client, inputs, tmp_path, canvas):
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (64, 48), (0, 0, 0, 0)).save(blank)  # what the browser sends for an untouched canvas
    value = {
        "none": None,
        "blank-background": {"background": handle_file(blank), "layers": [], "composite": None},
        "blank-composite": {"background": None, "layers": [], "composite": handle_file(blank)},
    }[canvas]
    with pytest.raises(AppError) as info:
        client.predict(value, "tiny-sketch2photo", True, api_name="/sketch_to_photo")
    _one_line(str(info.value), EMPTY_CANVAS_MESSAGE)
    _still_serves(client, "/sketch_to_photo", inputs["2x2"])


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_app_upload_over_the_size_cap(client, inputs, tmp_path, endpoint):
    path = tmp_path / "huge.png"
    _noise(700, 700).save(path)  # ~1.5 MB of incompressible pixels; the cap is 1 MB
    with pytest.raises(Exception, match="(?i)file size|too large|413") as info:
        ENDPOINTS[endpoint](client, path)
    assert "Traceback" not in str(info.value)
    _still_serves(client, endpoint, inputs["2x2"])

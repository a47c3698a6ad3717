"""Seconds per megapixel to encode a result PNG the way the app writes it (`imaging.save_png`, zlib level 6).

    python -m bench.png_encode                  # 4, 16 and 64 MP, RGB 8-bit and 16-bit
    python -m bench.png_encode --mp 16 --repeat 3

The image is examples/landscape.jpg resized (Lanczos) to each size: a photo-like result, as an upscale returns, not
noise (which compresses worse) nor a flat colour (which compresses better). The ZeroGPU duration function
(`gan_models.zerogpu.PNG_ENCODE_S_PER_MP`) reserves GPU time for this encoding, which runs inside the GPU call.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gan_models.imaging import save_png

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "landscape.jpg"


def photo(megapixels: float, *, sixteen_bit: bool = False) -> Image.Image:
    """examples/landscape.jpg resized to about `megapixels` MP (its aspect kept); 16-bit grayscale on request."""
    with Image.open(EXAMPLE) as src:
        src = src.convert("RGB")
        w, h = src.size
        k = math.sqrt(megapixels * 1e6 / (w * h))
        img = src.resize((round(w * k), round(h * k)), Image.Resampling.LANCZOS)
    if sixteen_bit:
        gray = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(gray)  # uint16 → mode I;16
    return img


def encode_seconds(img: Image.Image, repeat: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            start = time.perf_counter()
            save_png(img, Path(tmp) / f"{i}.png")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp", type=float, nargs="+", default=[4, 16, 64])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    print("size   kind          seconds  s/MP")
    for mp in args.mp:
        for sixteen in (False, True):
            img = photo(mp, sixteen_bit=sixteen)
            seconds = encode_seconds(img, args.repeat)
            real_mp = img.width * img.height / 1e6
            kind = "gray 16-bit" if sixteen else "RGB 8-bit"
            print(f"{real_mp:5.1f}  {kind:<12}  {seconds:7.2f}  {seconds / real_mp:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

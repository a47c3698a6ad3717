"""Flicker of frame-by-frame style transfer, and what gan_models.flicker does about it, on clips made from photos.

    python -m bench.video_flicker [--photo PATH] [--size 480x320] [--seconds 2.5] [--fps 24] [--weight 0.6]
                                  [--clips still,pan,zoom]

Three clips from one real photo (default: a scene of ../shared/data/sr/train), each `--seconds` long:
  still  the same view every frame, with fresh Gaussian sensor noise (sigma 4/255) per frame;
  pan    the view slides 2 px a frame to the right (noise sigma 2/255);
  zoom   the view closes in by 0.5% a frame around the centre (noise sigma 2/255).
Each frame goes once through the bundled "default-style" CycleGAN; its result is then kept as is (frame by frame)
and fed to gan_models.flicker.FlickerReducer (flicker reduction), so both see the very same model outputs.

Reported per clip, on the 0-255 scale:
  change   mean absolute difference between consecutive results (the still shot's flicker);
  warp     warping error: mean |O_t - O_t-1 moved by the TRUE motion| over pixels visible in both frames (the
           motion of a synthetic pan or zoom is known exactly, so no estimated flow judges itself);
  psnr     PSNR (dB) of each flicker-reduced frame against the frame-by-frame one: mean and worst frame (a ghost
           of earlier frames would pull the worst frame down).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

DEFAULT_PHOTO = (Path(__file__).resolve().parents[2] / "shared" / "data" / "sr" / "train"
                 / "sunhays_abbey_sun_asztnlqhlrvirneh.jpg")


def _boxes(kind: str, n: int, photo_w: int, photo_h: int, out_w: int, out_h: int) -> list[tuple[float, float, float]]:
    """(x0, y0, scale) per frame: output pixel (x, y) shows photo point (x0 + x * scale, y0 + y * scale)."""
    base = min((photo_w - 2 * n - 1) / out_w, photo_h / out_h) * 0.9  # room for the pan
    cx, cy = photo_w / 2, photo_h / 2
    boxes = []
    for t in range(n):
        if kind == "pan":
            scale, x0 = base, 2.0 * t * base
            y0 = cy - out_h * base / 2
        else:
            scale = base * (0.995 ** t if kind == "zoom" else 1.0)
            x0, y0 = cx - out_w * scale / 2, cy - out_h * scale / 2
        boxes.append((x0, y0, scale))
    return boxes


def make_frames(photo: np.ndarray, kind: str, n: int, size: tuple[int, int], seed: int = 0) -> tuple[list, list]:
    """The clip's frames (uint8 RGB) and their view boxes."""
    rng = np.random.default_rng(seed)
    out_w, out_h = size
    boxes = _boxes(kind, n, photo.shape[1], photo.shape[0], out_w, out_h)
    sigma = 4.0 if kind == "still" else 2.0
    frames = []
    for x0, y0, s in boxes:
        m = np.array([[s, 0, x0], [0, s, y0]], np.float32)
        view = cv2.warpAffine(photo, m, (out_w, out_h), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)
        noisy = view.astype(np.float32) + rng.normal(0, sigma, view.shape).astype(np.float32)
        frames.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return frames, boxes


def true_backward_flow(prev_box, box, size) -> tuple[np.ndarray, np.ndarray]:
    """Exact flow from frame t to t-1 of a synthetic clip, and where it stays inside frame t-1."""
    w, h = size
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    (px, py, ps), (x0, y0, s) = prev_box, box
    tx = (x0 + xx * s - px) / ps
    ty = (y0 + yy * s - py) / ps
    valid = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return np.stack([tx - xx, ty - yy], axis=-1), valid


def measure(outputs: list[np.ndarray], boxes, size) -> dict[str, float]:
    from gan_models.flicker import warp

    change, warp_err = [], []
    for t in range(1, len(outputs)):
        a, b = outputs[t - 1].astype(np.float32), outputs[t].astype(np.float32)
        change.append(np.abs(b - a).mean())
        flow, valid = true_backward_flow(boxes[t - 1], boxes[t], size)
        warp_err.append(np.abs(b - warp(a, flow))[valid].mean())
    return {"change": float(np.mean(change)), "warp": float(np.mean(warp_err))}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--size", default="480x320", help="frame size WxH")
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--weight", type=float, default=None, help="blend weight (default: flicker.DEFAULT_WEIGHT)")
    parser.add_argument("--model", default="default-style")
    parser.add_argument("--clips", default="still,pan,zoom", help="which clips, comma-separated")
    args = parser.parse_args(argv)

    from PIL import Image

    from gan_models import imaging
    from gan_models.flicker import DEFAULT_WEIGHT, FlickerReducer
    from gan_models.pipeline import translator_for

    size = tuple(int(v) for v in args.size.lower().split("x"))
    weight = DEFAULT_WEIGHT if args.weight is None else args.weight
    n = round(args.seconds * args.fps)
    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    translator = translator_for(args.model, backend="torch", background=False)
    value_range = translator.spec.value_range
    print(f"{args.model} on {args.photo.name}, {size[0]}x{size[1]}, {n} frames a clip, blend weight {weight}")
    print("| clip | change, frame by frame | change, reduced | ratio | warp error, frame by frame | "
          "warp error, reduced | PSNR vs frame by frame (mean / worst) | flow + blend ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.clips.split(","):
        frames, boxes = make_frames(photo, kind, n, size)
        raw, reduced, spent = [], [], 0.0
        reducer = FlickerReducer(weight)
        for frame in frames:
            x = imaging.to_tensor_range(frame.astype(np.float32) / 255, value_range)
            y = imaging.from_tensor_range(translator.run_array(x, tile=None), value_range)
            raw.append((y * 255 + 0.5).astype(np.uint8))
            t0 = time.perf_counter()
            reduced.append(reducer(frame, raw[-1]))
            spent += time.perf_counter() - t0
        a, b = measure(raw, boxes, size), measure(reduced, boxes, size)
        scores = [psnr(r, f) for r, f in zip(reduced[1:], raw[1:], strict=True)]
        print(f"| {kind} | {a['change']:.2f} | {b['change']:.2f} | {b['change'] / a['change']:.2f} | "
              f"{a['warp']:.2f} | {b['warp']:.2f} | {np.mean(scores):.1f} / {min(scores):.1f} dB | "
              f"{1000 * spent / n:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

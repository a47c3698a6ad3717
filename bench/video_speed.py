"""Video throughput: frames/s end to end, against frames x the model's own time per frame.

    python -m bench.video_speed [--seconds 1] [--backend auto] [--threads N]

Two clips made from a real photo (slow pan, 24 fps, H.264 + AAC, like a phone clip): 854x480 through the bundled
style model (flicker reduction on), 640x360 through the bundled x4 upscaler (2560x1440 out, reduction off).
For each: the model's time on one frame (median of 3 warm runs, same backend), the end-to-end time of
`translate_video` (decode, model, flow, encode, audio), frames/s, and the ratio end-to-end / (frames x per-frame
model time); the goal is <= 1.15. `model_s` is the model's time inside the run, so the ratio total / model_s is the
overhead measured within one run (robust on a busy machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench.video_flicker import DEFAULT_PHOTO, make_frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """H.264 (crf 20) + a stereo AAC tone, as a phone would record it."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        total, t = len(frames) * 48000 // fps, 0
        while t < total:
            wave = (0.2 * np.sin(2 * np.pi * 440 * (t + np.arange(1024)) / 48000)).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts = 48000, t
            out.mux(audio.encode(chunk))
            t += 1024
        out.mux(audio.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--backend", default="auto", help="auto (the runtime tournament's choice) | torch | onnx")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    from PIL import Image

    from gan_models import imaging
    from gan_models.pipeline import translator_for
    from gan_models.runtimes import tune_malloc
    from gan_models.video import translate_video

    tune_malloc()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    n = round(args.seconds * 24)
    print("| clip | model (backend) | frames | model s/frame | end to end s | frames/s | ratio to frames x model "
          "| total / model_s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gan-video-speed-") as tmp:
        for model, size, label in (("default-style", (854, 480), "480p style"),
                                   ("default-upscale-x4", (640, 360), "360p -> 1440p")):
            translator = translator_for(model, backend=args.backend, background=False)
            frames, _ = make_frames(photo, "pan", n, size)
            src = write_clip(Path(tmp) / f"{model}.mp4", frames)
            x = imaging.to_tensor_range(frames[0].astype(np.float32) / 255, translator.spec.value_range)
            translator.run_array(x)  # warm-up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                translator.run_array(x)
                times.append(time.perf_counter() - t0)
            per_frame = statistics.median(times)
            result = translate_video(translator, src, Path(tmp) / f"{model}_out.mp4", max_side=None)
            backend = f"{translator.backend.name} {translator.backend.precision}"
            print(f"| {label} | {model} ({backend}) | {result.frames} | {per_frame:.3f} | "
                  f"{result.seconds:.1f} | {result.frames / result.seconds:.2f} | "
                  f"{result.seconds / (result.frames * per_frame):.2f} | {result.seconds / result.model_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

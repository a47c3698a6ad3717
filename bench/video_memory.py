"""Peak memory of `translate_video` does not grow with the clip's length: a 5 s and a 60 s clip, each in a fresh
process.

    python -m bench.video_memory [--size 320x240] [--fps 12] [--model default-style] [--backend torch] [--threads 1]

Each clip (a slow pan over a real photo, H.264 + AAC) is written first; then a child process loads the model,
translates the clip (flicker reduction on for a style model) and prints its peak RSS (ru_maxrss) and its RSS before
the video started (model loaded and warmed up on one frame). The difference is what the video path itself holds.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.video_flicker import DEFAULT_PHOTO, make_frames
from bench.video_speed import write_clip


def child(clip: Path, model: str, backend: str, threads: int) -> None:
    import psutil
    import torch

    from gan_models.pipeline import translator_for
    from gan_models.runtimes import tune_malloc
    from gan_models.video import probe, translate_video

    tune_malloc()
    if threads:
        torch.set_num_threads(threads)
    translator = translator_for(model, backend=backend, background=False)
    info = probe(clip)
    x = np.zeros((1, 3, info.height, info.width), np.float32) + translator.spec.value_range[0]
    translator.run_array(x)
    before = psutil.Process().memory_info().rss
    result = translate_video(translator, clip, clip.with_name(clip.stem + "_out.mp4"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{result.frames} {result.duration_s:.1f} {before / 2**20:.0f} {peak / 2**20:.0f} {result.seconds:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--model", default="default-style")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seconds", default="5,60", help="clip lengths, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.model, args.backend, args.threads)
        return 0

    from PIL import Image

    size = tuple(int(v) for v in args.size.lower().split("x"))
    photo = np.asarray(Image.open(DEFAULT_PHOTO).convert("RGB"))
    print(f"{args.model} ({args.backend}), {size[0]}x{size[1]} at {args.fps} fps")
    print("| clip | frames | RSS before the video | peak RSS | peak - before | time s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gan-video-mem-") as tmp:
        for seconds in (float(s) for s in args.seconds.split(",")):
            n = round(seconds * args.fps)
            frames, _ = make_frames(photo, "pan", min(n, 60), size)  # a long clip repeats the 60-frame pan
            clip = write_clip(Path(tmp) / f"clip{seconds:g}.mp4", [frames[i % len(frames)] for i in range(n)],
                              fps=args.fps)
            out = subprocess.run([sys.executable, "-m", "bench.video_memory", "--child", str(clip),
                                  "--model", args.model, "--backend", args.backend, "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True).stdout.split()
            frames_done, duration, before, peak, spent = out[-5:]
            print(f"| {seconds:g} s | {frames_done} | {before} MB | {peak} MB | {int(peak) - int(before)} MB | "
                  f"{spent} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batch throughput of `python -m gan_models run`: the local engine, then Ray Data with 1 and 2 local workers, on the
same N images (docs/scale.md's table).

    python -m bench.scale                        # 100 crops of ../shared/data/sr/train, default-upscale-x4, torch
    python -m bench.scale --images 100 --size 96 --model default-upscale-x4 --backend torch --workers 1 2

Needs requirements-cluster.txt. One local Ray (num_cpus = max workers + 1) is started first and shared by the Ray
runs, so its start-up (printed once) is not in their times; each Ray run includes its actors' start and model load.
Prints a Markdown table: engine, workers, seconds, images/s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gan_models.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "sr" / "train"


def make_inputs(folder: Path, n: int, size: int) -> None:
    """`n` size x size centre crops of the shared photos (random pictures when they are absent)."""
    folder.mkdir(parents=True)
    photos = sorted(PHOTOS.glob("*.jpg")) if PHOTOS.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(n):
        if photos:
            img = Image.open(photos[i % len(photos)]).convert("RGB")
            left, top = (img.width - size) // 2 + (i // len(photos)) * 7, (img.height - size) // 2
            img = img.crop((left, top, left + size, top + size))
        else:
            img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        img.save(folder / f"{i:04d}.png")


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli_main(argv)
    if code != 0:
        raise SystemExit(f"run failed ({code}): {err.getvalue()[-500:]}")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--size", type=int, default=96, help="input side in pixels")
    p.add_argument("--model", default="default-upscale-x4")
    p.add_argument("--backend", default="torch")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        make_inputs(src, args.images, args.size)
        common = [args.model, str(src), "--device", "cpu", "--backend", args.backend]
        rows = [("local", 1, timed(["run", *common, "-o", f"{tmp}/local"]))]
        start = time.perf_counter()
        ray.init(num_cpus=max(args.workers) + 1, object_store_memory=256 * 2**20, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        print(f"local Ray start: {time.perf_counter() - start:.1f} s (not in the times below); "
              f"{os.cpu_count()} CPU cores")
        try:
            for n in args.workers:
                rows.append(("ray", n, timed(["run", *common, "-o", f"{tmp}/ray{n}", "--engine", "ray",
                                              "--workers", str(n)])))
        finally:
            ray.shutdown()
    print(f"\n{args.images} images of {args.size}x{args.size}, {args.model}, backend {args.backend}\n")
    print("| engine | workers | seconds | images/s |\n|---|---|---|---|")
    for engine, n, seconds in rows:
        print(f"| {engine} | {n} | {seconds:.1f} | {args.images / seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

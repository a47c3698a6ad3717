"""Memory of the app's model cache when visitors load many different custom models, one after the other.

    python -m bench.lru --models 20 --max-models 4      # RSS stays flat once 4 are loaded
    python -m bench.lru --models 20 --max-models 100    # for comparison: every model stays

Writes N distinct RRDBNet checkpoints (64 features, 6 blocks, 17 MB each, seeds 0..N-1) in Real-ESRGAN's layout
(`params_ema`) into a temporary folder, loads each through `gan_models.cache.ModelCache` (the app's model cache) as an
uploaded custom model (detected, torch backend on the CPU), runs it on a 96² image, and prints the
process RSS after each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--max-models", type=int, default=4)
    args = parser.parse_args(argv)

    from gan_models import SPECS, Settings
    from gan_models.archs import build_arch
    from gan_models.cache import ModelCache
    from gan_models.runtimes import tune_malloc

    tune_malloc()
    torch.set_num_threads(1)
    cache = ModelCache(SPECS, settings=Settings(backend="torch", device="cpu", max_models=args.max_models))
    image = np.random.default_rng(0).random((1, 3, 96, 96), dtype=np.float32)
    process = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="gan-lru-") as tmp:
        print(f"start: RSS {process.memory_info().rss / 2**20:.0f} MB, max_models {args.max_models}")
        for seed in range(args.models):
            torch.manual_seed(seed)
            net = build_arch("rrdbnet", num_in_ch=3, num_out_ch=3, num_feat=64, num_block=6, num_grow_ch=32, scale=4)
            path = Path(tmp) / f"esrgan-{seed}.pth"
            torch.save({"params_ema": net.state_dict()}, path)
            del net
            spec = cache.spec(str(path), allow_local=True)
            with cache.use(spec) as translator:
                translator.run_array(image, tile=None)
            print(f"after {seed + 1:3d}: RSS {process.memory_info().rss / 2**20:.0f} MB, {len(cache.loaded())} loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time and peak memory of resolving one generator of a CycleGAN training file (`netG_A`, `netG_B`, `netD_A`, ...).

    python -m bench.resolve_multi              # resolve 'FILE#netG_B' (detect + spec), then load it
    python -m bench.resolve_multi --runs 3     # three fresh processes

Writes a full-size CycleGAN training checkpoint the way junyanz/pytorch-CycleGAN-and-pix2pix's training state
looks once gathered in one file (two ResnetGenerators ngf=64 n_blocks=9, two PatchGAN discriminators, `epoch`;
~100 MB) into a temporary folder, then in a fresh Python process per run times `get_spec(FILE#netG_B)` and
`load_model(spec)`: the RSS growth of resolving and the peak (ru_maxrss) growth over the RSS after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
import psutil, torch
from gan_models.specs import get_spec
from gan_models.weights import load_model
torch.set_num_threads(1)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rss = lambda: psutil.Process().memory_info().rss / 2**20
start_peak, start_rss = peak(), rss()
t = time.perf_counter()
spec = get_spec(sys.argv[1] + "#netG_B")
resolve_s, resolve_peak, resolve_rss = time.perf_counter() - t, peak(), rss()
t = time.perf_counter()
loaded = load_model(spec, allow_fallback=False)
load_s, load_peak = time.perf_counter() - t, peak()
print(json.dumps({"start_mb": start_rss, "resolve_s": resolve_s, "resolve_peak_mb": resolve_peak - start_peak,
                  "resolve_rss_mb": resolve_rss - start_rss, "load_s": load_s, "load_peak_mb": load_peak - start_peak,
                  "arch": spec.arch}))
"""


def write_checkpoint(path: Path) -> None:
    import torch

    from gan_models.archs import build_arch

    torch.manual_seed(0)
    generator = {"in_channels": 3, "out_channels": 3, "ngf": 64, "n_blocks": 9}
    nets = {name: build_arch("resnet_generator", **generator) for name in ("netG_A", "netG_B")}
    nets |= {name: build_arch("patchgan", in_channels=3) for name in ("netD_A", "netD_B")}
    torch.save({**{name: net.state_dict() for name, net in nets.items()}, "epoch": 200}, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gan-resolve-") as tmp:
        path = Path(tmp) / "cyclegan_training.pth"
        write_checkpoint(path)
        print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MB")
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=600,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if out.returncode:
                print(out.stderr.strip().splitlines()[-1])
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"RSS after imports {r['start_mb']:.0f} MB; resolve {r['resolve_s']:.2f} s, RSS "
                  f"+{r['resolve_rss_mb']:.0f} MB, peak +{r['resolve_peak_mb']:.0f} MB; then load {r['load_s']:.2f} s, "
                  f"peak +{r['load_peak_mb']:.0f} MB over the start ({r['arch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

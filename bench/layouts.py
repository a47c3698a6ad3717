"""Detection time and output parity of the publishers' layouts at full size (one CPU thread).

    python -m bench.layouts /tmp/layouts

Builds each network with the publisher's own code as re-implemented in tests/test_publishers.py (junyanz
ResnetGenerator with batch norm / dropout at ngf=64 and 9 blocks, UPIT's CycleGAN file, the original ESRGAN layout
x2 and x1 with 23 blocks), saves it as the publisher does, then prints a Markdown row per file: what detection
found, the arch it loads into, the max difference between the publisher's network and ours on a random input,
and how long `find_generators` took (after spandrel's one-time import).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def _row(name: str, reference: nn.Module, path: Path, selector: str, value_range: tuple[float, float],
         side: int) -> str:
    from gan_models import custom
    from gan_models.detect import find_generators
    from gan_models.specs import get_spec
    from gan_models.weights import load_model
    from tests.test_publishers import _max_diff

    state = torch.load(path, weights_only=True)
    started = time.perf_counter()
    found = find_generators(state)
    seconds = time.perf_counter() - started
    custom.clear_cache()
    spec = get_spec(str(path) + selector)
    diff = _max_diff(reference, load_model(spec).module, side=side, value_range=value_range)
    return f"| {name} | {found[selector[1:]].summary} | {spec.arch} | {diff:.3g} | {seconds * 1000:.0f} ms |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the checkpoint files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    import spandrel  # noqa: F401 - its one-time import (~40 architectures) is not detection time

    from tests import test_publishers as pub

    print("| file | detected | loads into | max diff | detection |\n|---|---|---|---|---|")
    for norm, dropout in (("batch", False), ("batch", True), ("instance", True)):
        torch.manual_seed(0)
        net = pub.ResnetGenerator(3, 3, ngf=64, norm_layer=pub.get_norm_layer(norm), use_dropout=dropout, n_blocks=9)
        net = pub._randomise_norm_statistics(net).eval()
        path = args.out / f"junyanz_{norm}{'_dropout' if dropout else ''}_latest_net_G.pth"
        torch.save(net.state_dict(), path)
        label = f"junyanz ResnetGenerator, {norm} norm" + (", dropout" if dropout else "")
        print(_row(label, net, path, "", (-1.0, 1.0), 32), flush=True)
    torch.manual_seed(0)
    cyclegan = pub._randomise_norm_statistics(pub.CycleGAN(n_features=64, gen_blocks=9)).eval()
    path = args.out / "upit_pytorch_model.bin"
    torch.save(cyclegan.state_dict(), path)
    print(_row("UPIT CycleGAN file, #G_B", cyclegan.G_B, path, "#G_B", (-1.0, 1.0), 32), flush=True)
    for scale in (2, 1):
        torch.manual_seed(0)
        net = pub.OldRRDBNet(3, 3, nf=64, nb=23, upscale=scale).eval()
        path = args.out / f"{scale}x_old_esrgan.pth"
        torch.save(net.state_dict(), path)
        print(_row(f"original ESRGAN layout x{scale}", net, path, "", (0.0, 1.0), 24), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

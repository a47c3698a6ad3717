"""Train or fine-tune the studio's generators on your own images: CycleGAN, Pix2Pix and SRGAN.

    python train.py cyclegan --data DIR --out runs/style       # DIR/trainA (photos), DIR/trainB (paintings)
    python train.py pix2pix  --data DIR --out runs/sketch      # side-by-side AB images, or DIR/A + DIR/B by name
    python train.py pix2pix  --data photos/ --edges-from-photos --out runs/sketch   # edge maps made on the fly
    python train.py srgan    --data hr_photos/ --out runs/x4   # LR made by bicubic /4 on the fly
    python train.py srgan    --data hr/ --init realesrgan-x4 --out runs/ft   # start from any model's weights
    python train.py srgan    --out runs/x4 --resume            # go on exactly where a run stopped
    python train.py srgan    --out runs/x4 --resume --steps 20000            # ... or train it for longer

Every run writes into --out: `checkpoint.pt` (written atomically, read back with torch.load(weights_only=True)) and
`train_config.json`, `log.csv` (losses and validation), `samples/` (input | output | target grids) and at the end
`final/` = model.safetensors + config.json, which `python app.py --weights runs/x4`, the CLI and
`gan_models.get_spec("runs/x4")` load directly, + README.md (the Hugging Face model card: data, steps, validation
scores, how to load it) + sample.png; --push-to-hub REPO uploads final/ (CycleGAN also writes `final_reverse/`, the
B→A generator). Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and final/, and exits; `--resume`
continues with the same weights, optimisers, step, random state and data order. Bad data (missing or empty folders,
unreadable or too small images, unmatched pairs) stops the run before training with a one-line message and exit
code 2. docs/training.md has the data layouts, options and stabilisers.

This file is the command line; the code lives in training/ (one class per mode in training/cyclegan.py,
pix2pix.py and srgan.py under the generic loop of training/trainer.py; training/__init__.py maps it out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gan_models.errors import GanModelsError
from gan_models.runtimes import tune_malloc
from training import TrainError, distributed
from training.config import ARCH_FIELDS, TrainConfig
from training.modes import MODES
from training.trainer import StopRequest, Trainer, read_checkpoint


def build_parser() -> argparse.ArgumentParser:
    """Every option defaults to None so that `main` can tell what was given (which matters for --resume)."""
    d = TrainConfig(mode="pix2pix")

    def dflt(name: str) -> str:
        return f" (default: {getattr(d, name)})"

    def per_mode(name: str) -> str:
        return f" (default: {'; '.join(f'{k} {getattr(mode, name)}' for k, mode in MODES.items())})"

    p = argparse.ArgumentParser(prog="python train.py", description=__doc__.split("\n\n")[0],
                                epilog="Layouts, stabilisers and examples: docs/training.md.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=MODES)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", help="cyclegan: DIR/trainA + DIR/trainB; pix2pix: side-by-side AB images or DIR/A + "
                                  "DIR/B (same file names); --edges-from-photos and srgan: a folder of photos")
    g.add_argument("--val-data", help="validation images, same layout (cyclegan: DIR/testA or a folder of A images); "
                                      "default: hold back the last --val-count training images")
    g.add_argument("--val-count", type=int, help="images used for validation and sample grids" + dflt("val_count"))
    g.add_argument("--out", help="run folder: checkpoint.pt, log.csv, samples/, final/" + dflt("out"))
    g.add_argument("--name", help="model id written into final/config.json (default: the --out folder's name)")
    g.add_argument("--direction", choices=("AtoB", "BtoA"), help="pix2pix: which side is the input" + dflt("direction"))
    g.add_argument("--edges-from-photos", action="store_true", default=None,
                   help="pix2pix: --data holds plain photos; inputs are the app's edges_from_photo maps with "
                        "hand-drawing variation (stroke width, wobble, gaps, blur)")
    g.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                   help="continue from OUT/checkpoint.pt (or the given file); options given now override the "
                        "saved ones, except those that define the networks")
    g.add_argument("--export-fp16", action="store_true", default=None, help="write final/ in fp16 (half the size)")
    g.add_argument("--push-to-hub", metavar="REPO", help="upload final/ to this Hub model repo (needs a token)")
    m = p.add_argument_group("model")
    m.add_argument("--model", "--arch-preset", dest="model", metavar="MODEL_ID",
                   help="spec (id or train.py output folder) whose architecture to train"
                        + per_mode("default_model"))
    m.add_argument("--arch-kwargs", type=json.loads, metavar="JSON",
                   help='override architecture arguments, e.g. \'{"ngf": 16}\'')
    m.add_argument("--init", metavar="MODEL_ID",
                   help="start from this model's weights (spec id, train.py output folder); default: from scratch")
    m.add_argument("--d-width", type=int, help="discriminator width (ndf / SRGAN channels)" + dflt("d_width"))
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, help="optimizer steps" + dflt("steps"))
    o.add_argument("--epochs", type=int, help="passes over the training images (replaces --steps)")
    o.add_argument("--batch-size", type=int, help="images per step" + dflt("batch_size"))
    o.add_argument("--crop", type=int, help="training crop in output pixels" + per_mode("crop"))
    o.add_argument("--lr", type=float, help="generator learning rate" + dflt("lr"))
    o.add_argument("--lr-d", type=float, help="discriminator learning rate (two time-scale updates, TTUR); "
                                              "default: --lr")
    o.add_argument("--beta1", type=float, help="Adam beta1" + per_mode("beta1"))
    o.add_argument("--decay-from", type=float, help="learning rates fall linearly to 0 from this fraction of the "
                                                    "steps on, as in CycleGAN/Pix2Pix" + dflt("decay_from"))
    o.add_argument("--seed", type=int, help="seed for weights, crops and augmentation" + dflt("seed"))
    o.add_argument("--device", help="auto | cpu | cuda | cuda:N" + dflt("device"))
    o.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision autocast (default: on for CUDA, off on CPU)")
    o.add_argument("--amp-dtype", choices=("bf16", "fp16"),
                   help="autocast type; fp16 adds a GradScaler" + dflt("amp_dtype"))
    o.add_argument("--channels-last", action="store_true", default=None, help="channels-last memory format (GPU)")
    o.add_argument("--workers", type=int, help="data loader processes (default: CPU cores - 1, at most 16)")
    o.add_argument("--max-minutes", type=float, help="stop cleanly (checkpoint + final/) after this much wall time")
    s = p.add_argument_group("losses and stabilisers (defaults follow the papers)")
    s.add_argument("--gan-loss", choices=("lsgan", "vanilla", "hinge", "wgangp"),
                   help="adversarial loss (vanilla = BCE)" + per_mode("gan_loss"))
    s.add_argument("--label-smoothing", type=float,
                   help="one-sided: D's target for real images, 0.9 is usual (lsgan/vanilla)" + dflt("label_smoothing"))
    s.add_argument("--instance-noise", type=float, metavar="SIGMA",
                   help="std of Gaussian noise on D's inputs, decaying linearly to 0" + dflt("instance_noise"))
    s.add_argument("--spectral-norm", action="store_true", default=None,
                   help="spectral normalisation on D's layers (PatchGAN then drops its norm layers)")
    s.add_argument("--feature-matching", type=float, metavar="W",
                   help="weight of a feature-matching loss on D's activations for G" + dflt("feature_matching"))
    s.add_argument("--grad-clip", type=float, metavar="NORM", help="clip G's and D's gradient norms")
    s.add_argument("--lambda-l1", type=float, help="pix2pix: L1 weight" + dflt("lambda_l1"))
    s.add_argument("--lambda-cycle", type=float, help="cyclegan: cycle weight" + dflt("lambda_cycle"))
    s.add_argument("--lambda-identity", type=float,
                   help="cyclegan: identity weight, times the cycle weight" + dflt("lambda_identity"))
    s.add_argument("--pool-size", type=int, help="cyclegan: history of fakes shown to D" + dflt("pool_size"))
    s.add_argument("--pretrain-steps", type=int,
                   help="srgan: pixel-L1 steps before the adversarial phase (>= --steps: a PSNR model)"
                        + dflt("pretrain_steps"))
    s.add_argument("--adv-weight", type=float, help="srgan: adversarial loss weight" + dflt("adv_weight"))
    e = p.add_argument_group("monitoring")
    e.add_argument("--sample-every", type=int, help="write a sample grid every N steps" + dflt("sample_every"))
    e.add_argument("--val-every", type=int, help="validate every N steps" + dflt("val_every"))
    e.add_argument("--save-every", type=int, help="write checkpoint.pt every N steps" + dflt("save_every"))
    e.add_argument("--log-every", type=int, help="log.csv row of mean losses every N steps" + dflt("log_every"))
    return p


def explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user gave on the command line."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def resumed_config(args: argparse.Namespace, ckpt_path: Path, ckpt: dict[str, Any]) -> TrainConfig:
    """The saved config, with the options given now on top (except those that define the networks)."""
    saved, given = json.loads(ckpt["config"]), explicit_options(args)
    changed = [k for k in ARCH_FIELDS if k in given and given[k] != saved.get(k)]
    if changed:
        raise TrainError(f"--resume cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} "
                         f"(fixed by {ckpt_path}); start a new run with another --out instead")
    # the run folder is where the checkpoint is now, wherever it was when the run started
    return TrainConfig(**{**saved, **given, "out": given.get("out") or str(ckpt_path.parent)})


def main(argv: list[str] | None = None) -> int:
    """Parse options, train, and map every user mistake to one line on stderr and exit code 2."""
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    tune_malloc()  # otherwise glibc returns the activations' memory after every CPU step and faults it in again
    stop = StopRequest()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.resume is not None:
            ckpt_path = Path(args.resume) if args.resume else Path(args.out or TrainConfig.out) / "checkpoint.pt"
            ckpt = read_checkpoint(ckpt_path)
            cfg = resumed_config(args, ckpt_path, ckpt)
            trainer = Trainer(cfg)
            trainer.restore(ckpt)
        else:
            cfg = TrainConfig(**explicit_options(args))
            if (Path(cfg.out) / "checkpoint.pt").exists():
                raise TrainError(f"{cfg.out} already holds a run (checkpoint.pt); add --resume to continue it, or "
                                 f"choose another --out")
            trainer = Trainer(cfg)
        spec = trainer.spec
        autocast = f" ({cfg.amp_dtype} autocast)" if trainer.precision.enabled else ""
        ranks = f" x {trainer.ranks.world} processes (torchrun)" if trainer.ranks.active else ""
        if trainer.ranks.main:
            print(f"{cfg.mode}: {spec.arch} {dict(spec.arch_kwargs)} on {trainer.device}{ranks}{autocast}; "
                  f"{trainer.data.n_train} training images, validation on {trainer.data.val_note}; steps "
                  f"{trainer.step} -> {trainer.total}, batch {cfg.batch_size}, crop {cfg.crop}; writing to {cfg.out}")
        deadline = started + cfg.max_minutes * 60 if cfg.max_minutes is not None else None
        code = trainer.fit(stop, deadline)
        if code == 0 and trainer.ranks.main:
            minutes, seconds = divmod(round(time.monotonic() - started), 60)
            print(f"done: {trainer.step} steps in {minutes} min {seconds} s; generator in {trainer.out / 'final'} "
                  f"(python app.py --weights {trainer.out} offers it; the CLI and gan_models.get_spec load it too)")
        return code
    except GanModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        distributed.stop()


if __name__ == "__main__":
    sys.exit(main())

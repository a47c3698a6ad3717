"""The generic loop around a mode: device and precision, seeds, learning-rate schedule, checkpoints with the full
random state, signals, log.csv, samples and the final/ folder with its model card."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from gan_models import imaging
from gan_models.errors import first_line
from gan_models.files import atomic_write

from . import TrainError, distributed
from .card import model_card, public_config, public_name, push_to_hub
from .config import TrainConfig
from .data import StepBatches, StepDataset
from .mode import GanMode, Precision
from .modes import MODES
from .networks import generator_to_train

# The layout of checkpoint.pt: written by the single-file train.py first, unchanged since, so its checkpoints resume.
CHECKPOINT_FORMAT = "train.py/1"


class Trainer:
    """One run: a mode (networks, optimisers, data, step) inside the loop, checkpoints and outputs of train.py."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.ranks = distributed.start(pick_device(cfg.device))  # rank 0 of 1 unless started by torchrun
        self.device = self.ranks.device(pick_device(cfg.device))
        self.device_type = torch.device(self.device).type
        amp = cfg.amp if cfg.amp is not None else self.device_type == "cuda"
        self.precision = Precision(device_type=self.device_type, enabled=amp,
                                   dtype=torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16)
        if self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True  # every step has the same shapes
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        mode = MODES[cfg.mode]
        generator = generator_to_train(task=mode.task, mode=mode.name, default_model=mode.default_model,
                                       model=cfg.model, arch_kwargs=cfg.arch_kwargs, init=cfg.init)
        self.spec, self.init_spec = generator.spec, generator.init_spec
        mode.check_crop(cfg.crop, self.spec)
        if not cfg.data:
            raise TrainError("--data is required (see `python train.py --help`)")
        self.data = mode.load_data(cfg, self.spec)
        self.total = cfg.steps
        if cfg.epochs is not None:
            self.total = cfg.epochs * max(1, math.ceil(self.data.n_train / cfg.batch_size))
        self.mode: GanMode = mode(cfg=cfg, spec=self.spec, generator=generator.module, data=self.data,
                                  total=self.total, device=self.device, precision=self.precision, rng=self.rng)
        self.mode.ranks = self.ranks
        self.ranks.broadcast_weights(self.mode.nets.values())
        self.step = 0
        self.last_val: dict[str, float] = {}  # the latest validation scores, for the model card

    def learning_rate_factor(self) -> float:
        """Constant, then linear decay to 0 from --decay-from: a pure function of the step, so resuming is exact."""
        start = int(self.cfg.decay_from * self.total)
        return 1.0 if self.step < start else max(0.0, (self.total - self.step) / max(1, self.total - start))

    def validate(self) -> dict[str, float]:
        self.last_val = self.mode.validate()
        return self.last_val

    def write_samples(self, path: Path | None = None) -> Path:
        """samples/step_NNNNNNN.png (or `path`): input | output | target per validation image."""
        path = path or self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return imaging.save_png(self.mode.sample_grid(), path)

    # --- checkpoints: plain tensors, numbers and strings only, so torch.load(weights_only=True) reads them
    def state(self) -> dict[str, Any]:
        py_version, py_state, py_gauss = self.rng.getstate()
        _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "config": json.dumps(asdict(self.cfg)),
            **self.mode.state(),  # nets, optimizers, scalers, pools
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device_type == "cuda" else [],
                "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                          "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
                "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                           "gauss": py_gauss},
            },
        }

    def save_checkpoint(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "checkpoint.pt"
        atomic_write(path, lambda p: torch.save(self.state(), p))
        atomic_write(self.out / "train_config.json", lambda p: p.write_text(json.dumps(asdict(self.cfg), indent=2)))
        return path

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint read by `read_checkpoint`: weights, optimisers, scalers, pools, RNGs, step."""
        self.mode.load_state(ckpt)
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device_type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        n = rng["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        py = rng["python"]
        self.rng.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
        self.step = int(ckpt["step"])

    def write_final(self) -> Path:
        """final/ (the mode may add folders, e.g. final_reverse/): model.safetensors + config.json, a spec
        gan_models loads, plus sample.png and README.md, the Hub model card."""
        cfg, spec = self.cfg, self.spec
        name = cfg.name or self.out.resolve().name
        fields = {
            "id": name, "title": f"{name} (train.py)", "task": spec.task, "arch": spec.arch,
            "arch_kwargs": dict(spec.arch_kwargs), "value_range": list(spec.value_range), "scale": spec.scale,
            "size_multiple": spec.size_multiple, "tile": spec.tile, "tile_overlap": spec.tile_overlap,
            "input_size": self.mode.input_size,
            "licence": spec.licence if cfg.init else "",
            "description": f"{cfg.mode} trained with train.py for {self.step} steps on {public_name(cfg.data)}",
            "training": {"steps": self.step, "config": public_config(cfg)},
        }
        dtype = torch.float16 if cfg.export_fp16 else torch.float32
        final = self.mode.save_generators(self.out, fields, dtype)
        self.write_samples(final / "sample.png")
        card = model_card(mode=type(self.mode), cfg=cfg, spec=spec, model_id=name, steps=self.step,
                          n_images=self.data.n_train, val_note=self.data.val_note,
                          metrics=self.last_val or self.validate(), init_spec=self.init_spec,
                          folder=final, sample="sample.png")
        atomic_write(final / "README.md", lambda p: p.write_text(card, encoding="utf-8"))
        return final

    # --- the loop
    def fit(self, stop: StopRequest, deadline: float | None) -> int:
        """Train to self.total steps, or until a signal or the deadline; always ends with a checkpoint and final/.

        Returns the exit code: 0 done, 1 diverged (non-finite losses), 128 + signal number when interrupted.
        """
        cfg = self.cfg
        cores = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: shared by ranks
        workers = cfg.workers if cfg.workers is not None else max(0, min(16, cores - 1))
        main, share = self.ranks.main, self.ranks.share(cfg.batch_size)
        loader = DataLoader(StepDataset(self.data.sampler, cfg.seed),
                            batch_sampler=StepBatches(self.step, self.total, cfg.batch_size, share),
                            num_workers=workers,
                            pin_memory=self.device_type == "cuda", worker_init_fn=ignore_signals,
                            prefetch_factor=4 if workers else None,
                            # its own generator: the loader's worker seeding would otherwise draw from the global
                            # torch RNG and shift it differently in a resumed run (our data uses no worker seeds)
                            generator=torch.Generator().manual_seed(cfg.seed))
        log = RunLog(self.out, ["step", "seconds", *self.mode.log_columns], resume_step=self.step) if main else None
        bar = progress_bar(self.step, self.total, disable=not main)
        try:
            if self.step == 0 and log is not None:  # a baseline row, so the log shows what training changed
                log.write({"step": 0, "seconds": 0.0, **self.validate()})
            start = time.monotonic() - (log.seconds_before if log is not None else 0.0)
            sums: dict[str, Tensor] = {}
            logged = self.step  # step of the last log row; losses are averaged over the steps since
            for x, y in loader:
                self.mode.set_learning_rates(self.learning_rate_factor())
                for k, v in self.mode.train_step(x, y, step=self.step).items():
                    sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
                self.step += 1
                # the last step of this session, planned or not, is always validated, sampled and saved
                last = self.step == self.total or self.ranks.any(  # every rank stops at the same step
                    bool(stop.reason or (deadline is not None and time.monotonic() > deadline)))
                validate, sample = self.step % cfg.val_every == 0, self.step % cfg.sample_every == 0
                if self.step % cfg.log_every == 0 or validate or sample or last:
                    row = {"step": self.step, "seconds": round(time.monotonic() - start, 2)}
                    row |= {k: float(v) / (self.step - logged)  # the GPU syncs; the mean over the ranks
                            for k, v in self.ranks.mean(sums).items()}
                    if not all(math.isfinite(v) for v in row.values()):
                        print(f"\nerror: the losses became {row} near step {self.step}; checkpoint.pt is left as "
                              f"it was. Lower --lr, or try --grad-clip 1, --spectral-norm or --gan-loss lsgan",
                              file=sys.stderr)
                        return 1
                    sums, logged = {}, self.step
                    if log is not None:  # rank 0 validates and writes; the other ranks only train
                        if validate or last:
                            row |= self.validate()
                        if sample or last:
                            self.write_samples()
                        log.write(row)
                        bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k not in ("step", "seconds")},
                                        refresh=False)
                bar.update(1)
                if last:
                    break
                if main and self.step % cfg.save_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        final = None
        if main:
            self.save_checkpoint()
            final = self.write_final()
        if stop.reason and self.step < self.total:
            if main:
                print(f"{stop.reason}: saved {self.out / 'checkpoint.pt'} and {final} at step {self.step}; continue "
                      f"with: python train.py {cfg.mode} --out {self.out} --resume", file=sys.stderr)
            return 128 + int(getattr(signal, stop.reason))
        if main and cfg.push_to_hub:
            push_to_hub(final, cfg.push_to_hub, {sub: self.out / folder for sub, (folder, _)
                                                 in type(self.mode).published_folders.items()})
        return 0


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: no CUDA device is available (use --device cpu)")
    try:
        torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"--device {name}: {first_line(exc)}") from exc
    return name


def ignore_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C/SIGTERM to the main process, which saves a checkpoint and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks the loop to stop after the current step; a second one exits."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.reason:
            raise SystemExit(128 + signum)
        self.reason = signal.Signals(signum).name
        print(f"\n{self.reason}: stopping after this step and saving (send it again to quit at once)",
              file=sys.stderr)


class RunLog:
    """log.csv (the mode's columns) and TensorBoard scalars when tensorboard is installed.

    On resume, rows past the checkpoint's step (written after the last save of a crashed run) are dropped.
    """

    def __init__(self, out: Path, columns: list[str], *, resume_step: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path, self.columns = out / "log.csv", columns
        kept = []
        if resume_step and self.path.exists():
            with self.path.open(newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.seconds_before = float(kept[-1]["seconds"]) if kept else 0.0  # training time of the earlier sessions
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, restval="", extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "seconds"):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def progress_bar(start: int, total: int, *, disable: bool = False) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr, smoothing=0.05,
                disable=disable)


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"nothing to resume: {path} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - every unreadable checkpoint gets the same clear message
        raise TrainError(f"cannot resume from {path}: {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"cannot resume from {path}: not a train.py checkpoint")
    return ckpt

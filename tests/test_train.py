"""train.py end to end on tiny synthetic data: every mode trains, resumes exactly, survives SIGTERM, and writes a
model that gan_models loads and runs; losses really fall when overfitting; bad data gives one clear line and exit 2.

Networks are shrunk with --arch-kwargs and --d-width, crops are 32 px, and main() is called in-process (except for
the signal test), so the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train
from gan_models import get_spec, translator_for
from training import data as train_data
from training.modes import MODES

from .conftest import TRAIN_COMMON, TRAIN_TINY, make_data, picture

ROOT = Path(__file__).resolve().parents[1]
def run(mode: str, data: Path | None, out: Path, *extra: str) -> int:
    argv = [mode, "--out", str(out), *TRAIN_COMMON, *TRAIN_TINY[mode], *extra]
    return train.main(argv + (["--data", str(data)] if data is not None else []))


def log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


CASES = {
    "cyclegan": ("cyclegan", "cyclegan", []),
    "pix2pix-ab": ("pix2pix", "ab", ["--direction", "BtoA"]),
    "pix2pix-folders": ("pix2pix", "folders", []),
    "pix2pix-edges": ("pix2pix", "photos", ["--edges-from-photos"]),
    # crosses into the adversarial phase, with the stabilisers the GPU smoke test does not cover
    "srgan": ("srgan", "photos", ["--pretrain-steps", "2", "--spectral-norm", "--label-smoothing", "0.9",
                                  "--instance-noise", "0.05", "--lr-d", "4e-4"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mode_trains_resumes_and_loads_in_gan_models(tmp_path: Path, case: str) -> None:
    mode, layout, extra = CASES[case]
    data = make_data(tmp_path / "data", layout, size=(64, 48) if mode == "srgan" else (48, 40))
    out = tmp_path / "run"
    assert run(mode, data, out, "--steps", "3", "--save-every", "2", *extra) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3
    assert json.loads((out / "train_config.json").read_text())["mode"] == mode
    first = log_rows(out)
    assert [int(r["step"]) for r in first] == [0, 1, 2, 3]
    loss = next(k for k in MODES[mode].log_columns if not k.startswith("val"))
    assert all(np.isfinite(float(r[loss])) for r in first[1:])

    assert train.main([mode, "--out", str(out), "--resume", "--steps", "5"]) == 0
    rows = log_rows(out)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 5
    assert sorted(p.name for p in (out / "samples").iterdir())[-1] == "step_0000005.png"

    spec = get_spec(str(out / "final"))
    assert spec.task == MODES[mode].task and spec.id == "run"
    result = translator_for(spec, device="cpu")(picture(50, 37, 99))
    assert result.size == (50 * spec.scale, 37 * spec.scale)
    if mode == "cyclegan":
        assert get_spec(str(out / "final_reverse")).id == "run-reverse"


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "cyclegan")
    # A pool smaller than the fakes seen draws from the python RNG, WGAN-GP's mixing weights from torch's. The
    # learning rate stays constant: its decay (like instance noise) follows --steps, which differs between the runs.
    extra = ["--pool-size", "2", "--gan-loss", "wgangp", "--feature-matching", "1", "--decay-from", "1"]
    assert run("cyclegan", data, tmp_path / "straight", "--steps", "4", *extra) == 0
    assert run("cyclegan", data, tmp_path / "split", "--steps", "2", *extra) == 0
    assert train.main(["cyclegan", "--out", str(tmp_path / "split"), "--resume", "--steps", "4"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for net in a["nets"]:
        for key, value in a["nets"][net].items():
            assert torch.equal(value, b["nets"][net][key]), f"{net}.{key} differs after resuming"


@pytest.mark.slow  # 300 + 300 training steps: 25 s on a busy 2-core machine
def test_srgan_overfits_psnr_rises(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "photos", n=1, size=(64, 64))
    out = tmp_path / "run"
    assert run("srgan", data, out, "--steps", "300", "--pretrain-steps", "300", "--lr", "2e-3", "--decay-from",
               "0.7", "--val-every", "300", "--sample-every", "300", "--save-every", "1000", "--log-every", "100") == 0
    rows = log_rows(out)
    before, after = float(rows[0]["val_psnr"]), float(rows[-1]["val_psnr"])
    assert after > before + 4, (before, after)
    assert float(rows[-1]["val_ssim"]) > float(rows[0]["val_ssim"]) + 0.2


@pytest.mark.slow  # 80 training steps: 16 s on a busy 2-core machine
def test_pix2pix_overfits_l1_falls(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "ab", n=2, size=(32, 32))
    out = tmp_path / "run"
    assert run("pix2pix", data, out, "--steps", "80", "--lr", "1e-3", "--val-every", "80", "--sample-every", "80",
               "--save-every", "1000", "--log-every", "20") == 0
    rows = log_rows(out)
    before, after = float(rows[0]["val_l1"]), float(rows[-1]["val_l1"])
    assert after < 0.6 * before, (before, after)


@pytest.mark.slow  # 120 steps of four networks: 125 s on a busy 2-core machine
def test_cyclegan_overfits_cycle_loss_falls(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "cyclegan", n=2, size=(32, 32))
    out = tmp_path / "run"
    assert run("cyclegan", data, out, "--steps", "120", "--lr", "2e-3", "--val-every", "120", "--sample-every",
               "120", "--save-every", "1000", "--log-every", "40") == 0
    rows = log_rows(out)
    before, after = float(rows[0]["val_cycle_l1"]), float(rows[-1]["val_cycle_l1"])
    assert after < 0.5 * before, (before, after)
    assert float(rows[-1]["cycle"]) < float(rows[1]["cycle"])


def bad_empty(root: Path) -> tuple[str, list[str], list[str]]:
    (root / "photos").mkdir(parents=True)
    return "srgan", ["--data", str(root / "photos")], ["holds no images"]


def bad_missing(root: Path) -> tuple[str, list[str], list[str]]:
    make_data(root / "d", "photos")
    return "cyclegan", ["--data", str(root / "d")], ["trainA", "is not a folder"]


def bad_unreadable(root: Path) -> tuple[str, list[str], list[str]]:
    make_data(root / "d", "photos")
    (root / "d" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return "srgan", ["--data", str(root / "d")], ["unreadable", "broken.jpg"]


def bad_unmatched(root: Path) -> tuple[str, list[str], list[str]]:
    make_data(root / "d", "folders")
    (root / "d" / "A" / "p0.png").rename(root / "d" / "A" / "lonely.png")
    return "pix2pix", ["--data", str(root / "d")], ["unmatched pairs", "A/lonely", "B/p0"]


def bad_small(root: Path) -> tuple[str, list[str], list[str]]:
    make_data(root / "d", "photos")
    picture(20, 60, 5).save(root / "d" / "tiny.png")
    return "srgan", ["--data", str(root / "d")], ["smaller than the 32px crop", "tiny.png (20x60)"]


def bad_crop_multiple(root: Path) -> tuple[str, list[str], list[str]]:
    make_data(root / "d", "ab")
    return "pix2pix", ["--data", str(root / "d"), "--crop", "40"], ["--crop 40 must be a multiple of 32"]


@pytest.mark.parametrize("make", [bad_empty, bad_missing, bad_unreadable, bad_unmatched, bad_small, bad_crop_multiple])
def test_bad_data_is_one_clear_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, make) -> None:
    mode, args, expected = make(tmp_path)
    assert run(mode, None, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_run_folder_is_not_overwritten_and_resume_keeps_the_architecture(tmp_path: Path, capsys) -> None:
    data = make_data(tmp_path / "data", "photos", size=(64, 48))
    out = tmp_path / "run"
    assert run("srgan", data, out, "--steps", "1") == 0
    assert run("srgan", data, out, "--steps", "1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train.main(["srgan", "--out", str(out), "--resume", "--arch-kwargs", '{"num_feat": 16}']) == 2
    assert "cannot change --arch-kwargs" in capsys.readouterr().err
    assert train.main(["srgan", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_init_from_a_run_folder_fp16_export_time_limit_and_offline_push(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = make_data(tmp_path / "data", "photos", size=(64, 48))
    assert run("srgan", data, tmp_path / "first", "--steps", "2") == 0
    # --lr 0 leaves the --init weights untouched; --max-minutes 0 stops after the first step and still finishes.
    assert train.main(["srgan", "--data", str(data), "--out", str(tmp_path / "second"), "--init",
                       str(tmp_path / "first"), "--lr", "0", "--steps", "50", "--max-minutes", "0", "--export-fp16",
                       "--push-to-hub", "someone/model", *TRAIN_COMMON, "--d-width", "8"]) == 0
    captured = capsys.readouterr()
    assert "not pushed to someone/model: offline" in captured.err
    assert "done: 1 steps" in captured.out
    first = load_file(tmp_path / "first" / "final" / "model.safetensors")
    second = load_file(tmp_path / "second" / "final" / "model.safetensors")
    assert all(v.dtype == torch.float16 for v in second.values())
    assert all(torch.equal(first[k].half(), second[k]) for k in first)
    assert train.main(["srgan", "--data", str(data), "--out", str(tmp_path / "third"), "--init",
                       str(tmp_path / "first"), "--arch-kwargs", '{"num_feat": 16}', *TRAIN_COMMON]) == 2
    assert "--init" in capsys.readouterr().err


def test_sketchy_edges_vary_strokes_but_stay_black_on_white() -> None:
    photo = np.asarray(picture(64, 64, 3))
    maps = [train_data.sketchy_edges(photo, random.Random(seed)) for seed in range(12)]
    assert all(m.shape == (64, 64, 3) and m.dtype == np.uint8 for m in maps)
    ink = [float((m[..., 0] < 128).mean()) for m in maps]
    assert max(ink) > 1.3 * min(ink) > 0  # thinner and thicker strokes
    assert all(m[..., 0].mean() > 128 for m in maps)  # mostly paper
    stroke = np.full((9, 9), 255, np.uint8)
    stroke[4, :] = 0
    assert (train_data.thicken(stroke, 2) == 0).sum(axis=0).tolist() == [3] * 9


@pytest.mark.slow  # a train.py process with a data worker: 56 s on a busy machine
def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "photos", size=(64, 48))
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "srgan", "--data", str(data), "--out", str(out), "--steps",
           "100000", "--save-every", "3", *TRAIN_COMMON, *TRAIN_TINY["srgan"]]
    cmd[cmd.index("--workers") + 1] = "1"  # a worker process too: it must leave the signal to the main process
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: saved" in err and "Traceback" not in err
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 3
    assert int(log_rows(out)[-1]["step"]) == step
    assert train.main(["srgan", "--out", str(out), "--resume", "--steps", str(step + 2), "--workers", "0"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step + 2

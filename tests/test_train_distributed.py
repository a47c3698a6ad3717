"""train.py across processes (torchrun / torch.distributed with gloo on the CPU): two processes with the same global
batch train like one, rank 0 alone writes, and a resumed two-process run continues the step count.

Tolerance: losses and validation scores agree to 1e-5 relative (the runs differ only in the order floating-point
sums are taken: the global batch's gradient is the mean of two half-batch means). Marked `cluster`: each run starts
processes (~20 s on a busy 2-core machine); run with `pytest -m cluster`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import train
from tests.conftest import TRAIN_COMMON, TRAIN_TINY, free_port, make_data
from tests.test_train import ROOT, log_rows
from training import trainer
from training.modes import MODES

pytestmark = pytest.mark.cluster

# cyclegan with instance norm everywhere and no image pool: nothing per-process but the batch slice
ARGS = ["cyclegan", *TRAIN_COMMON, *TRAIN_TINY["cyclegan"], "--pool-size", "0", "--steps", "3", "--save-every", "2"]


def _rank(rank: int, world: int, port: int, argv: list[str], record: str) -> None:
    """One process of a two-process run, as torchrun would start it; records every file it writes atomically."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    written: list[str] = []
    real = trainer.atomic_write

    def recording(path, write):
        written.append(Path(path).name)
        return real(path, write)

    trainer.atomic_write = recording
    code = train.main(argv)
    Path(f"{record}.{rank}").write_text(json.dumps({"code": code, "written": written}))


def spawn(world: int, argv: list[str], record: Path) -> list[dict]:
    mp.start_processes(_rank, args=(world, free_port(), argv, str(record)), nprocs=world, start_method="spawn",
                       join=True)
    return [json.loads(Path(f"{record}.{r}").read_text()) for r in range(world)]


def test_two_processes_train_like_one_and_only_rank_0_writes(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "cyclegan")
    one = spawn(1, [*ARGS, "--data", str(data), "--out", str(tmp_path / "one")], tmp_path / "one")
    two = spawn(2, [*ARGS, "--data", str(data), "--out", str(tmp_path / "two")], tmp_path / "two")
    assert [r["code"] for r in one + two] == [0, 0, 0]
    # rank 0 writes checkpoint.pt once per save (step 2 and the end), rank 1 nothing at all
    assert two[0]["written"].count("checkpoint.pt") == 2 == one[0]["written"].count("checkpoint.pt")
    assert two[1]["written"] == []
    # every logged column: the losses (mean over the ranks) and rank 0's validation of the trained weights. (Weights
    # are not compared one by one: a bias in front of InstanceNorm has a gradient of ~0, rounding noise whose sign
    # Adam turns into a full step either way.)
    columns = ["step", *MODES["cyclegan"].log_columns]
    a, b = log_rows(tmp_path / "one"), log_rows(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["0", "1", "2", "3"]
    for ra, rb in zip(a, b, strict=True):
        for k in columns:
            if ra[k]:
                assert float(rb[k]) == pytest.approx(float(ra[k]), rel=1e-5, abs=1e-7), (ra["step"], k)


def test_torchrun_resumes_and_continues_the_step_count(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "cyclegan")
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port()), str(ROOT / "train.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([*torchrun, *ARGS, "--data", str(data), "--out", str(out), "--steps", "2"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "x 2 processes (torchrun)" in first.stdout
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    again = subprocess.run([*torchrun, "cyclegan", "--out", str(out), "--resume", "--steps", "4"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "steps 2 -> 4" in again.stdout
    assert [int(r["step"]) for r in log_rows(out)] == [0, 1, 2, 3, 4]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4


def test_a_batch_that_does_not_split_is_one_line(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "cyclegan")
    argv = [*ARGS, "--batch-size", "3", "--data", str(data), "--out", str(tmp_path / "odd")]
    assert [r["code"] for r in spawn(2, argv, tmp_path / "odd")] == [2, 2]

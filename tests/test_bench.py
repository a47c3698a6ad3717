"""`python -m bench` end to end on one small tab: the table and JSON the README quotes come from this code; the busy
mode's competing process and the verdict on a pick (bench/busy.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.busy import Pick, bench_name, competing, format_picks
from gan_models.runtimes.cpu import cpu_signature, has_bf16

from .conftest import REPO

PATHS = ("eager", "torch", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16", "torch-bf16")


@pytest.mark.slow  # every path's export and timing: 48 s on a busy machine
def test_bench_times_every_path_and_marks_the_default(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tabs", "style", "--paths", *PATHS,
         "--repeats", "1", "--warmup", "0", "--cache", str(tmp_path / "onnx"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "malloc tuned (tune_malloc)" in proc.stdout
    assert f"CPU: {cpu_signature()}" in proc.stdout  # the flags that decide which paths can win
    data = json.loads(out.read_text())
    rows = {r["path"]: r for r in data["rows"] if r["tab"] == "style"}
    assert set(rows) == set(PATHS)
    # Paths this machine cannot run are listed with the reason, not timed and not dropped.
    missing = {"openvino-fp32": importlib.util.find_spec("openvino") is None,
               "openvino-bf16": importlib.util.find_spec("openvino") is None or not has_bf16(),
               "torch-bf16": not has_bf16()}
    for path, unavailable in missing.items():
        assert rows[path]["note"].startswith("unavailable: ") == unavailable, rows[path]
        if unavailable:
            assert rows.pop(path)["seconds"] == []
        elif path.endswith("bf16"):
            assert 40 <= rows[path]["psnr_db"] < 100  # reduced precision really ran, and kept the 40 dB bar
        else:
            assert rows[path]["psnr_db"] > 60
    assert all(r["median_s"] > 0 and len(r["seconds"]) == 1 for r in rows.values())
    assert rows["eager"]["psnr_db"] is None  # the reference
    assert rows["torch"]["psnr_db"] == float("inf") or rows["torch"]["psnr_db"] > 100
    assert rows["onnx-fp32"]["psnr_db"] > 60
    default = data["defaults"]["style"]
    assert default in rows
    if default == "onnx-int8":  # auto only takes int8 at >= 40 dB against fp32
        assert rows["onnx-int8"]["psnr_db"] >= 40
    assert f"**{default}** (default)" in proc.stdout
    assert list((tmp_path / "onnx").rglob("*.onnx")), "exports went to --cache"


def test_busy_mode_runs_one_competing_process_on_one_core_and_stops_it():
    with competing() as line:
        pid = int(line.split("pid ")[1].split(")")[0])
        assert os.sched_getaffinity(pid) == {max(os.sched_getaffinity(0))}
        deadline = time.monotonic() + 10
        while int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11]) == 0:  # utime, in ticks
            assert time.monotonic() < deadline, "the competing process never ran"
            time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
    with competing(False) as nothing:
        assert nothing == ""


def test_a_pick_is_good_within_ten_percent_of_the_fastest_candidate():
    medians = {"eager": 0.30, "torch": 0.25, "onnx-int8": 0.105, "openvino-bf16": 0.100}
    good = Pick("default-sketch", "onnx-int8", True, 42.0, medians, {"torch": float("inf"), "onnx-int8": 48.3,
                                                                     "openvino-bf16": 70.1})
    assert good.best == "openvino-bf16" and good.ratio == pytest.approx(1.05) and good.ok
    bad = Pick("default-sketch", "torch", False, 42.0, medians, good.psnr_db)
    assert bad.ratio == pytest.approx(2.5) and not bad.ok
    table = format_picks([good, bad])
    assert "| default-sketch | onnx-int8 | 105 | 2.86x | 1.05x | 48.3 dB | **pick** |" in table
    assert "| default-sketch | openvino-bf16 | 100 | 3.00x | 1.00x | 70.1 dB | fastest |" in table
    assert "| default-sketch | torch | openvino-bf16 | 2.50 | NO | not final | 42 s |" in table
    assert [bench_name(*c) for c in (("onnxruntime", "int8"), ("torch", "fp32"), ("torch", "bf16"),
                                     ("openvino", "bf16-subpixel"))] == ["onnx-int8", "torch", "torch-bf16",
                                                                         "openvino-bf16-subpixel"]

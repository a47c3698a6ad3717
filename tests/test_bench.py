"""`python -m bench` end to end on one small tab: the table and JSON the README quotes come from this code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

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

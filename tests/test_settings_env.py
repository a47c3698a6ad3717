"""Settings: the one reader of the environment, through one explicit table (settings.ENV)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gan_models import settings
from gan_models.settings import ENV, Settings

PACKAGE = Path(settings.__file__).resolve().parent


def test_only_settings_reads_the_environment():
    readers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if re.search(r"os\.environ|getenv|putenv", p.read_text()) and p.name != "settings.py")
    assert readers == []


def test_variable_names_appear_only_through_the_table():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        for name in re.findall(r"[\"']((?:GAN_STUDIO|HF|SPACES)_[A-Z_]+)[\"']", path.read_text()):
            raise AssertionError(f"{path.relative_to(PACKAGE)} names {name} as a string; use settings.ENV")


def test_every_settings_field_has_one_variable():
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert set(fields) <= set(ENV)
    assert len(set(ENV.values())) == len(ENV)


def test_from_env_reads_each_field_by_its_table_name():
    values = {"backend": "onnx", "device": "cpu", "concurrency": "3", "queue_size": "7", "max_file_size": "9mb",
              "max_input_pixels": "11", "max_upscale_pixels": "12", "max_style_side": "13", "preview_side": "14",
              "retry_after_s": "1.5", "threads": "2", "mcp": "1", "tile_budget_mb": "15", "onnx_cache": "/tmp/x",
              "max_weights_mb": "16", "max_models": "4", "custom_models": "0", "zero_gpu": "true"}
    got = Settings.from_env({ENV[field]: value for field, value in values.items()})
    assert got == Settings(backend="onnx", device="cpu", concurrency=3, queue_size=7, max_file_size="9mb",
                           max_input_pixels=11, max_upscale_pixels=12, max_style_side=13, preview_side=14,
                           retry_after_s=1.5, threads=2, mcp=True, tile_budget_mb=15, onnx_cache=Path("/tmp/x"),
                           max_weights_mb=16, max_models=4, custom_models=False, zero_gpu=True)


def test_call_time_readers_use_the_table(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV["backend"], " Torch ")
    monkeypatch.setenv(ENV["hub_cache"], str(tmp_path / "hub"))
    monkeypatch.setenv(ENV["zero_gpu"], "1")
    assert settings.forced_backend() == "torch"
    assert settings.hub_cache_dir() == tmp_path / "hub"
    assert settings.zero_gpu()
    monkeypatch.delenv(ENV["backend"])
    assert settings.forced_backend() is None


def test_requested_backend_takes_a_passed_value_over_the_environment(monkeypatch):
    from gan_models.runtimes import requested_backend

    monkeypatch.setenv(ENV["backend"], "torch")
    assert requested_backend("auto") == "torch"
    assert requested_backend("auto", "onnx") == "onnxruntime"

"""`python -m gan_models`: list, batch run over files and folders, bad files skipped, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from gan_models import SPECS
from gan_models.cli import main

from .conftest import rgb_image


def test_list_prints_every_model(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for spec_id in SPECS:
        assert spec_id in out
    assert main(["list", "--task", "upscale"]) == 0
    out = capsys.readouterr().out
    assert "realesrgan-x4" in out and "style-monet" not in out


def test_run_batch_skips_bad_files(tiny_specs, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rgb_image(20, 16).save(folder / "a.png")
    rgb_image(12, 9, mode="RGBA").save(folder / "sub" / "b.png")
    (folder / "broken.png").write_bytes(b"this is not an image")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["run", str(tiny_specs["upscale"].bundled.parent), str(folder), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_tiny-upscale.png", "b_tiny-upscale.png"]
    assert Image.open(out / "a_tiny-upscale.png").size == (80, 64)
    assert Image.open(out / "b_tiny-upscale.png").mode == "RGBA"
    assert "broken.png" in err and "empty.jpg" in err and "2 written" in err
    assert "Traceback" not in err


def test_run_unknown_model_is_one_line(tmp_path, capsys):
    rgb_image().save(tmp_path / "x.png")
    assert main(["run", "nope", str(tmp_path / "x.png"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model 'nope'") and "\n" not in err


def test_run_unwritable_output_is_clear(tiny_specs, tmp_path, capsys):
    rgb_image().save(tmp_path / "x.png")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    code = main(["run", str(tiny_specs["upscale"].bundled.parent), str(tmp_path / "x.png"), "-o", str(blocker)])
    assert code == 2
    assert "cannot create output folder" in capsys.readouterr().err
    assert (tmp_path / "x.png").is_file()


@pytest.mark.parametrize("tile", ["-3", "big"])
def test_bad_tile_argument(tile, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gan_models", "run", "default-upscale-x4", "x.png", "-o", str(tmp_path), "--tile", tile],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "tile" in proc.stderr and "Traceback" not in proc.stderr


def test_run_takes_its_defaults_from_the_environment(tiny_specs, tmp_path, monkeypatch, capsys):
    from gan_models import cache

    seen: dict = {}
    real = cache.build_translator

    def spy(loaded, **options):
        seen.update(options)
        return real(loaded, **options)

    monkeypatch.setattr(cache, "build_translator", spy)
    monkeypatch.setenv("GAN_STUDIO_TILE_BUDGET_MB", "64")
    monkeypatch.setenv("GAN_STUDIO_DEVICE", "cpu")
    rgb_image().save(tmp_path / "x.png")
    assert main(["run", str(tiny_specs["upscale"].bundled.parent), str(tmp_path / "x.png"), "-o",
                 str(tmp_path / "o")]) == 0
    assert (seen["tile_budget_mb"], seen["device"]) == (64, "cpu")
    capsys.readouterr()

    monkeypatch.setenv("GAN_STUDIO_CONCURRENCY", "lots")
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: GAN_STUDIO_CONCURRENCY='lots'") and "\n" not in err


def test_run_offline_hub_model_says_it_fell_back(offline_hub, tmp_path, capsys):
    rgb_image(20, 16).save(tmp_path / "x.png")
    code = main(["run", "realesrgan-x4", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: Hub unreachable for realesrgan-x4; using the bundled default-upscale-x4" in err
    assert Image.open(tmp_path / "o" / "x_default-upscale-x4.png").size == (80, 64)
    assert main(["run", "realesrgan-x4", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "--no-fallback"]) == 2
    assert "offline mode" in capsys.readouterr().err

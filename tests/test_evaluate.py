"""The eval command: metrics that match their definitions, every task on a couple of images, the CLI table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gan_models import GanModelsError, get_spec, translator_for
from gan_models.cli import main
from gan_models.evaluate import evaluate, psnr, rgb_to_y, ssim

from .conftest import rgb_image, skip_without_shared_data


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        rgb_image(72, 56, seed=i).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image, ignored")
    return folder


def test_metrics_match_their_definitions():
    a = np.zeros((16, 16))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")
    img = np.random.default_rng(0).random((32, 32)) * 255
    assert ssim(img, img) == pytest.approx(1.0)
    smooth = np.add.outer(np.arange(32.0), np.arange(32.0)) * 3
    assert ssim(smooth, smooth + np.random.default_rng(1).normal(0, 20, smooth.shape)) < 0.5
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)


def test_upscale_report_has_model_and_bicubic(tiny_specs, photos, tmp_path):
    translator = translator_for(str(tiny_specs["upscale"].bundled.parent), backend="torch", device="cpu")
    report = evaluate(translator, photos, out_dir=tmp_path / "out")
    assert [r[0] for r in report.rows] == ["p0.png", "p1.png"]
    means = report.means
    assert set(means) == {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}
    assert 5 < means["bicubic_psnr"] < 60 and 0 < means["bicubic_ssim"] <= 1
    assert np.isfinite(means["psnr"])
    assert (tmp_path / "out" / "tiny-upscale_crops.png").is_file()


def test_sketch_report_and_grid(tiny_specs, photos, tmp_path):
    translator = translator_for(str(tiny_specs["sketch2photo"].bundled.parent), backend="torch", device="cpu")
    report = evaluate(translator, photos, out_dir=tmp_path)
    assert report.columns[:2] == ["l1", "psnr"] and len(report.rows) == 2
    assert all(0 <= v for v in report.means.values())
    grid = Image.open(tmp_path / "tiny-sketch2photo_grid.png")
    side = translator.spec.input_size  # 64 for the tiny model: cells fit the images
    assert grid.size == (3 * side, 2 * side)


def test_style_cycle_needs_reverse(tiny_specs, photos, tmp_path):
    translator = translator_for(str(tiny_specs["style"].bundled.parent), backend="torch", device="cpu")
    assert evaluate(translator, photos).columns == ["change_l1"]
    report = evaluate(translator, photos, reverse=translator, out_dir=tmp_path)
    assert report.columns == ["change_l1", "cycle_l1", "cycle_psnr"]
    assert 0 < report.means["cycle_l1"] < 1
    side = translator.spec.input_size or 256  # cells fit the images: no white margins around small ones
    assert Image.open(tmp_path / f"{translator.spec.id}_grid.png").size == (3 * min(side, 256), 2 * min(side, 256))


def test_cli_eval_prints_a_table(tiny_specs, photos, capsys):
    assert main(["eval", str(tiny_specs["upscale"].bundled.parent), "--data", str(photos), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "| **mean** |" in out and "bicubic_psnr" in out


def test_cli_eval_empty_folder_is_a_clear_error(tiny_specs, tmp_path, capsys):
    assert main(["eval", str(tiny_specs["upscale"].bundled.parent), "--data", str(tmp_path)]) == 2
    assert "holds no images" in capsys.readouterr().err
    with pytest.raises(GanModelsError, match="not a folder"):
        evaluate(translator_for(str(tiny_specs["upscale"].bundled.parent), backend="torch", device="cpu"),
                 tmp_path / "missing")


def test_bundled_upscaler_beats_bicubic_on_set5():
    data = skip_without_shared_data() / "sr" / "val"
    spec = get_spec("default-upscale-x4")
    report = evaluate(translator_for(spec, backend="torch", device="cpu"), data, limit=2)
    assert report.means["psnr"] >= report.means["bicubic_psnr"] + 0.5

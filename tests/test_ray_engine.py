"""`run --engine ray`: the same files (names and PNG bytes), skip lines and exit code as the local engine.

Marked `cluster` (needs requirements-cluster.txt; a local Ray takes ~30 s to start on a busy 2-core machine): one
module-scoped local Ray serves every test. Run with `pytest -m cluster` (.ci/run does).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from gan_models.cli import main
from tests.conftest import rgb_image

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-cluster.txt")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=3, object_store_memory=256 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def mixed_folder(root):
    """RGB, RGBA in a subfolder, 16-bit grayscale, a JPEG with an ICC-less EXIF, and three bad files."""
    (root / "sub").mkdir(parents=True)
    rgb_image(20, 16).save(root / "a.png")
    rgb_image(12, 9, mode="RGBA", seed=1).save(root / "sub" / "b.png")
    gray = (np.arange(14 * 10, dtype=np.uint16).reshape(10, 14) * 400)
    Image.fromarray(gray).save(root / "c16.png")
    rgb_image(18, 11, seed=2).save(root / "d.jpg", quality=90)
    (root / "broken.png").write_bytes(b"this is not an image")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "a.png").read_bytes()[:60])
    return root


def skipped(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("skipped ", "note: ")) or " written to " in line]


def test_ray_engine_matches_the_local_engine_byte_for_byte(local_ray, tiny_specs, tmp_path, capsys):
    folder = mixed_folder(tmp_path / "in")
    model = str(tiny_specs["upscale"].bundled.parent)
    missing = str(tmp_path / "nowhere.png")
    common = [model, str(folder), missing, "--device", "cpu", "--backend", "torch"]

    assert main(["run", *common, "-o", str(tmp_path / "local")]) == 1
    local_err = capsys.readouterr().err
    assert main(["run", *common, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 1
    ray_err = capsys.readouterr().err

    local = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert local == ["a_tiny-upscale.png", "b_tiny-upscale.png", "c16_tiny-upscale.png", "d_tiny-upscale.png"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == local
    for name in local:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert Image.open(tmp_path / "ray" / "b_tiny-upscale.png").mode == "RGBA"
    lines = skipped(ray_err)
    assert [re.sub(r" written to \S+", "", s) for s in lines] == [
        re.sub(r" written to \S+", "", s) for s in skipped(local_err)]
    assert {line.split(":")[0] for line in lines if line.startswith("skipped")} == {
        f"skipped {missing}", f"skipped {folder / 'broken.png'}", f"skipped {folder / 'empty.jpg'}",
        f"skipped {folder / 'truncated.png'}"}
    assert "4 written" in ray_err and "4 skipped" in ray_err
    assert "Traceback" not in ray_err


def test_ray_engine_writes_to_a_pyarrow_uri(local_ray, tiny_specs, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    rgb_image(20, 16).save(folder / "a.png")
    code = main(["run", str(tiny_specs["style"].bundled.parent), f"file://{folder}", "-o", f"file://{tmp_path}/out",
                 "--device", "cpu", "--engine", "ray", "--workers", "1", "--suffix", ""])
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "a.png").size == (20, 16)

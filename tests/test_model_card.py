"""final/README.md, the Hub model card every train.py run writes: YAML metadata the Hub reads (parsed back here),
the text sections, a sample image, `base_model` for a Hub --init, and a second push that uploads the new card.

Tiny networks and 1-3 steps on 32 px crops, as in test_train.py; the Hub is faked (offline cache, fake HfApi).
"""

from __future__ import annotations

import csv
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from PIL import Image

import train
from gan_models.specs import SPECS
from gan_models.weights import build_generator
from training.card import hub_license
from training.modes import MODES

from .conftest import TRAIN_COMMON, TRAIN_TINY, hub_cache_path, make_data, tiny_variant

LAYOUT = {"cyclegan": "cyclegan", "pix2pix": "ab", "srgan": "photos"}
TAGS = {"cyclegan": "cyclegan", "pix2pix": "pix2pix", "srgan": "super-resolution"}


def read_card(folder: Path) -> tuple[dict, str]:
    """(YAML metadata, Markdown body) of folder/README.md, split the way the Hub splits it."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:80]
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def last_log_row(out: Path) -> dict[str, str]:
    with (out / "log.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))[-1]


@pytest.mark.parametrize("mode", list(MODES))
def test_every_run_writes_a_model_card_with_metadata_scores_and_a_sample(tmp_path: Path, mode: str) -> None:
    data = make_data(tmp_path / "my data", LAYOUT[mode], size=(64, 48) if mode == "srgan" else (48, 40))
    out = tmp_path / "run"
    argv = [mode, "--data", str(data), "--out", str(out), "--steps", "2", *TRAIN_COMMON, *TRAIN_TINY[mode]]
    assert train.main(argv) == 0

    meta, body = read_card(out / "final")
    assert huggingface_hub.ModelCard((out / "final" / "README.md").read_text()).data.to_dict() == meta
    assert meta["license"] == "mit"  # trained from scratch by this project
    assert meta["pipeline_tag"] == "image-to-image" and meta["library_name"] == "gan-studio"
    assert meta["tags"] == ["gan", *MODES[mode].card_tags, "image-to-image"] and TAGS[mode] in meta["tags"]
    assert "base_model" not in meta
    assert body.count("\n## ") == 3 and "## Training" in body and "## Validation" in body
    assert f"- Data: `{data}`, 3 training images" in body and "- Steps: 2 " in body
    scores = {k: v for k, v in last_log_row(out).items() if k.startswith("val_") and v}
    assert scores and all(f"| `{k}` | {float(v):.4g} |" in body for k, v in scores.items())
    assert "](sample.png)" in body
    sample = Image.open(out / "final" / "sample.png")
    grid = Image.open(out / "samples" / "step_0000002.png")
    assert sample.size == grid.size and sample.tobytes() == grid.tobytes()  # the last validation's grid
    final = out / "final"
    for usage in (f"python -m gan_models run {final} in.png -o out/", f"python app.py --weights {final}",
                  f'gan_models.translator_for("{final}")'):
        assert usage in body


def test_a_hub_init_is_the_base_model_and_sets_the_licence(tmp_path: Path, offline_hub: Path, monkeypatch) -> None:
    spec = tiny_variant(SPECS["realesrgan-x4"])  # ai-forever/Real-ESRGAN in its real layout, tiny
    monkeypatch.setitem(SPECS, spec.id, spec)
    torch.manual_seed(1)
    torch.save(build_generator(spec).state_dict(), hub_cache_path(offline_hub, spec))
    data = make_data(tmp_path / "data", "photos", size=(64, 48))
    out = tmp_path / "ft"
    assert train.main(["srgan", "--data", str(data), "--out", str(out), "--init", spec.id, "--steps", "1",
                       *TRAIN_COMMON]) == 0
    meta, body = read_card(out / "final")
    assert meta["base_model"] == "ai-forever/Real-ESRGAN"
    assert meta["license"] == "bsd-3-clause"
    assert f"fine-tuned from `{spec.id}`" in body and f"- Licence of the weights: {spec.licence}." in body


def test_hub_license_maps_spec_licences() -> None:
    assert [hub_license(s.licence) for s in (SPECS["default-upscale-x4"], SPECS["realesrgan-x4plus"],
                                             SPECS["edges2shoes"], SPECS["style-monet"])] == \
        ["mit", "bsd-3-clause", "mit", "bsd-2-clause"]
    assert hub_license("") == "mit"
    assert hub_license("unspecified by the publisher") == "unknown"
    assert hub_license("CreativeML Open RAIL-M") == "other"


class FakeHfApi:
    """Records what `upload_folder` would send: the README.md text at upload time, per call."""

    uploads: list[tuple[str, str, str]] = []

    def create_repo(self, repo_id: str, *, exist_ok: bool = False) -> None:
        assert exist_ok

    def upload_folder(self, *, repo_id: str, folder_path: str) -> None:
        FakeHfApi.uploads.append((repo_id, folder_path, (Path(folder_path) / "README.md").read_text()))


def test_pushing_again_uploads_the_updated_card(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    monkeypatch.setattr(FakeHfApi, "uploads", [])
    data = make_data(tmp_path / "data", "photos", size=(64, 48))
    out = tmp_path / "run"
    push = ["--push-to-hub", "someone/tiny-x4"]
    assert train.main(["srgan", "--data", str(data), "--out", str(out), "--steps", "1", *push, *TRAIN_COMMON,
                       *TRAIN_TINY["srgan"]]) == 0
    assert train.main(["srgan", "--out", str(out), "--resume", "--steps", "3", *push]) == 0
    assert capsys.readouterr().out.count("pushed ") == 2

    (repo1, folder1, card1), (repo2, folder2, card2) = FakeHfApi.uploads
    assert repo1 == repo2 == "someone/tiny-x4" and Path(folder1) == Path(folder2) == out / "final"
    assert "- Steps: 1 " in card1 and "- Steps: 3 " in card2 and card1 != card2
    assert card2 == (out / "final" / "README.md").read_text()
    assert 'gan_models.translator_for("someone/tiny-x4")' in card2
    assert "huggingface-cli download someone/tiny-x4" in card2


def test_a_run_stopped_by_the_time_limit_still_writes_its_card(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "ab")
    out = tmp_path / "run"
    assert train.main(["pix2pix", "--data", str(data), "--out", str(out), "--steps", "50", "--max-minutes", "0",
                       *TRAIN_COMMON, *TRAIN_TINY["pix2pix"]]) == 0
    meta, body = read_card(out / "final")
    assert meta["tags"][:2] == ["gan", "pix2pix"] and "- Steps: 1 " in body
    assert (out / "final" / "sample.png").is_file()

"""final/README.md, the Hub model card every train.py run writes: YAML metadata the Hub reads (parsed back here),
the text sections, a sample image, `base_model` for a Hub --init, and a second push that uploads the new card.

Tiny networks and 1-3 steps on 32 px crops, as in test_train.py; the Hub is faked (offline cache, fake HfApi).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

import train
from gan_models.specs import SPECS, HubFile
from gan_models.weights import build_generator
from training.card import hub_license, licence_metadata
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
    card = huggingface_hub.ModelCard((out / "final" / "README.md").read_text())
    assert card.data.to_dict() == meta  # huggingface_hub's own parser reads back exactly what was written
    assert meta["license"] == "mit"  # trained from scratch by this project
    assert meta["pipeline_tag"] == "image-to-image" and meta["library_name"] == "gan-studio"
    assert meta["tags"] == ["gan", *MODES[mode].card_tags, "image-to-image"] and TAGS[mode] in meta["tags"]
    assert "base_model" not in meta
    assert body.count("\n## ") == 3 and "## Training" in body and "## Validation" in body
    assert "- Data: `my data`, 3 training images" in body and "- Steps: 2 " in body
    scores = {k: v for k, v in last_log_row(out).items() if k.startswith("val_") and v}
    assert scores and all(f"| `{k}` | {float(v):.4g} |" in body for k, v in scores.items())
    # the same scores as model-index, as huggingface_hub parses it
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "run"
    assert {r.metric_name: r.metric_value for r in results} == pytest.approx({k: float(v) for k, v in scores.items()},
                                                                             abs=1e-6)
    assert {(r.task_type, r.dataset_name, r.dataset_split) for r in results} == {("image-to-image", "my data",
                                                                                 "validation")}
    assert [r.metric_name for r in card.data.eval_results] == list(scores)
    # nothing that is pushed names a path of this machine
    for name in ("README.md", "config.json"):
        text = (out / "final" / name).read_text()
        assert str(tmp_path) not in text and "/tmp" not in text, name
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["training"]["config"]["data"] == "my data" and config["training"]["config"]["out"] == "run"
    assert "](sample.png)" in body
    sample = Image.open(out / "final" / "sample.png")
    grid = Image.open(out / "samples" / "step_0000002.png")
    assert sample.size == grid.size and sample.tobytes() == grid.tobytes()  # the last validation's grid
    for usage in ("python -m gan_models run run/final in.png -o out/", "python app.py --weights run/final",
                  'gan_models.translator_for("run/final")'):
        assert usage in body
    assert ("`run/final_reverse`: the reverse generator" in body) == (mode == "cyclegan")


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


def test_other_licences_name_their_terms_and_link_them() -> None:
    spec = SPECS["realesrgan-x4"]
    rail = dataclasses.replace(spec, licence="CreativeML Open RAIL-M")
    assert licence_metadata(rail.licence, rail) == {
        "license": "other", "license_name": "creativeml-open-rail-m",
        "license_link": "https://huggingface.co/ai-forever/Real-ESRGAN"}
    local = dataclasses.replace(rail, sources=(), bundled=Path("w.pth"), source="a file from a friend")
    assert licence_metadata(local.licence, local) == {"license": "unknown"}  # "other" needs a page to link
    meta = {"license": "other", "license_name": "creativeml-open-rail-m",
            "license_link": "https://huggingface.co/ai-forever/Real-ESRGAN"}
    assert huggingface_hub.ModelCardData(**meta).to_dict() == meta


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

    def upload_folder(self, *, repo_id: str, folder_path: str, path_in_repo: str | None = None) -> None:
        card = Path(folder_path) / "README.md"
        FakeHfApi.uploads.append((repo_id, folder_path, card.read_text() if card.is_file() else path_in_repo))


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
    assert "hf download someone/tiny-x4" in card2 and "huggingface-cli" not in card2


def test_a_cyclegan_push_uploads_both_generators_each_loadable_by_id(tmp_path: Path, offline_hub: Path,
                                                                      monkeypatch, capsys) -> None:
    from gan_models import custom, translator_for

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    monkeypatch.setattr(FakeHfApi, "uploads", [])
    data = make_data(tmp_path / "data", "cyclegan")
    out = tmp_path / "h2z"
    assert train.main(["cyclegan", "--data", str(data), "--out", str(out), "--steps", "1", "--push-to-hub",
                       "someone/h2z", *TRAIN_COMMON, *TRAIN_TINY["cyclegan"]]) == 0
    (_, main_folder, _), (_, reverse_folder, sub) = FakeHfApi.uploads
    assert Path(main_folder) == out / "final" and Path(reverse_folder) == out / "final_reverse" and sub == "reverse"
    _, body = read_card(out / "final")
    assert "`someone/h2z/reverse/model.safetensors`: the reverse generator" in body
    # the repo as the Hub would serve it (the offline cache): each generator loads by its id
    for folder, prefix in ((out / "final", ""), (out / "final_reverse", "reverse/")):
        for name in ("config.json", "model.safetensors"):
            target = hub_cache_path(offline_hub, HubFile(repo_id="someone/h2z", filename=prefix + name))
            target.write_bytes((folder / name).read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    custom.clear_cache()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    ids = {"someone/h2z": out / "final", "someone/h2z/reverse/model.safetensors": out / "final_reverse"}
    for repo_id, folder in ids.items():
        translator = translator_for(repo_id, backend="torch", device="cpu", allow_fallback=False)
        local = translator_for(str(folder), backend="torch", device="cpu")
        assert translator.spec.arch == local.spec.arch
        assert torch.equal(translator.backend.model(x), local.backend.model(x))
    custom.clear_cache()


def test_a_run_stopped_by_the_time_limit_still_writes_its_card(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", "ab")
    out = tmp_path / "run"
    assert train.main(["pix2pix", "--data", str(data), "--out", str(out), "--steps", "50", "--max-minutes", "0",
                       *TRAIN_COMMON, *TRAIN_TINY["pix2pix"]]) == 0
    meta, body = read_card(out / "final")
    assert meta["tags"][:2] == ["gan", "pix2pix"] and "- Steps: 1 " in body
    assert (out / "final" / "sample.png").is_file()

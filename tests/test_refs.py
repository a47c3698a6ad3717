"""Model references: one parser and printer of ids, plain picklable data (for worker processes and Ray actors)."""

from __future__ import annotations

import pickle

import pytest

from gan_models.errors import UnknownModelError
from gan_models.refs import ModelRef, file_safe_name, join_id, parse_model_ref, split_id
from gan_models.specs import SPECS


@pytest.mark.parametrize("text", [
    "me/repo",
    "spaces/me/cyclegan/checkpoints/a_b/latest_net_G.pth@v1.0#G_B?range=0,1&tile=none",
    "me/esrgan/RealESRGAN_x4plus.pth@0123456789abcdef",
    "me/cyclegan/ckpt.pth#netG_A",
    "me/repo?task=style&multiple=8",
])
def test_hub_ids_print_back_to_themselves(text):
    ref = parse_model_ref(text, allow_local=False)
    assert str(ref) == text and ref.text == text
    assert parse_model_ref(str(ref), allow_local=False) == ref


def test_models_prefix_is_dropped_when_printed():
    ref = parse_model_ref("models/me/repo/a.pth.tar", allow_local=False)
    assert (ref.repo_type, ref.repo_id, ref.filename) == ("model", "me/repo", "a.pth.tar")
    assert str(ref) == "me/repo/a.pth.tar" and ref.text == "models/me/repo/a.pth.tar"
    assert parse_model_ref(str(ref), allow_local=False) == ref  # `text` is not part of equality


def test_local_path_round_trip(tmp_path):
    (tmp_path / "x4.pth").write_bytes(b"not read while parsing")
    ref = parse_model_ref(f"{tmp_path / 'x4.pth'}#G_B?range=0,1")
    assert ref.local == (tmp_path / "x4.pth").resolve() and ref.repo_id is None
    assert (ref.network, dict(ref.options)) == ("G_B", {"range": "0,1"})
    assert parse_model_ref(str(ref)) == ref


def test_ref_is_plain_picklable_data():
    ref = parse_model_ref("spaces/me/cyclegan/ckpt.pth@v1#G_B?range=0,1", allow_local=False)
    back = pickle.loads(pickle.dumps(ref))
    assert back == ref and back.text == ref.text and back.options == (("range", "0,1"),)
    assert ModelRef(repo_id="me/repo", options={"tile": "none"}).options == (("tile", "none"),)
    assert str(ModelRef(repo_id="me/repo", network="G_A")) == "me/repo#G_A"


def test_model_spec_is_picklable():
    spec = SPECS["realesrgan-x4"]
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and dict(back.arch_kwargs) == dict(spec.arch_kwargs) and back.sources == spec.sources


def test_split_and_join_are_inverse():
    assert split_id("me/repo/x.pth#G_B?range=0,1") == ("me/repo/x.pth", "G_B", "range=0,1")
    assert split_id("me/repo") == ("me/repo", None, "")
    for text in ("me/repo/x.pth#G_B?range=0,1", "me/repo", "a/b?tile=none", "a/b#n"):
        assert join_id(*split_id(text)) == text


def test_unknown_id_names_the_known_ones_when_given():
    with pytest.raises(UnknownModelError, match=r"unknown model 'nope'; choose one of: a, b; or give a Hub id"):
        parse_model_ref("nope", known=["a", "b"])
    with pytest.raises(UnknownModelError, match=r"unknown model 'nope'; give a Hub id"):
        parse_model_ref("nope")


def test_file_safe_name_uses_the_one_splitter():
    assert file_safe_name("me/repo/net_G.pth#G_B?range=0,1") == "net_G-G_B"
    assert file_safe_name("/data/x4.safetensors") == "x4"
    assert file_safe_name("default-upscale-x4") == "default-upscale-x4"

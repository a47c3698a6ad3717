"""Bounds on what a visitor controls (gan_models.limits): option values, weights files checked from their header
before any tensor is read, refusals remembered by the file's sha256, and the wording of the size cap."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from gan_models import custom, limits, resolve
from gan_models.archs import build_arch
from gan_models.custom import parse_model_ref, resolve_custom
from gan_models.errors import UnknownModelError, UnsupportedModelError


@pytest.fixture(autouse=True)
def _fresh_cache():
    custom.clear_cache()
    yield
    custom.clear_cache()


@pytest.mark.parametrize(("option", "message"), [
    ("tile=2000", "tile must be between 16 and 1024, not 2000"),
    ("tile=999999", "tile must be between 16 and 1024"),
    ("multiple=2000", "multiple must be between 1 and 256, not 2000"),
    ("scale=1000", "scale must be between 1 and 8, not 1000"),
    ("scale=0", "scale must be between 1 and 8, not 0"),
    ("range=0,inf", "range values must be finite numbers"),
    ("range=nan,1", "range values must be finite numbers"),
    ("range=1,0", "range needs low < high"),
    ("range=0,1e9", "range values must be within"),
    ("range=0", "range needs two numbers"),
    ("tile=1e9", "invalid literal"),
])
def test_option_values_out_of_bounds_are_refused_in_one_line(tmp_path, option, message):
    path = tmp_path / "x4.pth"
    torch.save(build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=4,
                          act_type="prelu").state_dict(), path)
    with pytest.raises(UnknownModelError, match="bad option value") as info:
        resolve_custom(f"{path}?{option}", max_weights_mb=5)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_option_values_within_bounds():
    assert limits.option_value("tile", "none") is None
    assert limits.option_value("tile", "256") == 256
    assert limits.option_value("multiple", "256") == 256
    assert limits.option_value("scale", "8") == 8
    assert limits.option_value("range", "-1,1") == (-1.0, 1.0)


def test_a_repeated_option_is_refused_not_last_wins():
    with pytest.raises(UnknownModelError, match="option tile is given twice"):
        parse_model_ref("me/repo/x.pth?tile=64&tile=2000", allow_local=False)


def test_an_empty_part_in_a_hub_file_path_is_refused():
    with pytest.raises(UnknownModelError, match="nor empty parts"):
        parse_model_ref("owner/name//etc/passwd.pth", allow_local=False)


def _srvgg(path, *, upscale=4, num_conv=1):
    net = build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=num_conv, upscale=upscale,
                     act_type="prelu")
    torch.save(net.state_dict(), path)  # what Real-ESRGAN's own training code saves (a plain state dict)
    return path


def test_a_network_over_x8_is_refused_and_the_refusal_is_remembered_by_hash(tmp_path, monkeypatch):
    first = _srvgg(tmp_path / "x64.pth", upscale=64)
    with pytest.raises(UnsupportedModelError, match=r"x64.pth: an x64 network is over this server's limit of x8"):
        resolve_custom(str(first), max_weights_mb=5)
    reads = []
    monkeypatch.setattr(resolve, "read_state_dict", lambda p: reads.append(p))
    second = tmp_path / "other-name.pth"
    second.write_bytes(first.read_bytes())
    with pytest.raises(UnsupportedModelError) as info:
        resolve_custom(str(second), max_weights_mb=5)
    assert str(info.value) == f"{second}: an x64 network is over this server's limit of x8 (refused before)"
    assert reads == []  # the second upload of the same bytes is not read, let alone detected


def test_refusals_are_bounded():
    memory = limits.RefusalMemory(kept=2)
    for i in range(3):
        memory.remember(f"sha{i}", "f", UnsupportedModelError(f"f: reason {i}"))
    memory.check("sha0", "g")  # forgotten: the oldest went first
    with pytest.raises(UnsupportedModelError, match=r"^g: reason 2 \(refused before\)$"):
        memory.check("sha2", "g")


def test_a_torch_file_declaring_20k_blocks_is_refused_from_its_pickle(tmp_path, monkeypatch):
    path = tmp_path / "deep.pth"
    torch.save({"body.0.weight": torch.zeros(4, 3, 3, 3), "body.20002.weight": torch.zeros(48, 4, 3, 3)}, path)
    monkeypatch.setattr(resolve, "read_state_dict", lambda p: pytest.fail("read before the header was checked"))
    with pytest.raises(UnsupportedModelError, match=r"key 'body.20002.weight' declares block 20002; this server "
                                                    r"builds networks of up to 1024 blocks"):
        resolve_custom(str(path), max_weights_mb=5)


def test_many_tiny_tensors_are_refused_from_the_safetensors_header(tmp_path, monkeypatch):
    path = tmp_path / "many.safetensors"
    save_file({f"g{i}.weight": torch.zeros(1) for i in range(40)}, str(path))
    monkeypatch.setattr(limits, "MAX_TENSORS", 32)
    monkeypatch.setattr(resolve, "read_state_dict", lambda p: pytest.fail("read before the header was checked"))
    with pytest.raises(UnsupportedModelError, match="more than 32 tensors; this server's limit is 32"):
        resolve_custom(str(path), max_weights_mb=5)


def test_many_tiny_tensors_are_refused_from_a_torch_zip(tmp_path, monkeypatch):
    path = tmp_path / "many.pth"
    torch.save({f"g{i}.weight": torch.zeros(1) for i in range(40)}, path)
    monkeypatch.setattr(limits, "MAX_TENSORS", 32)
    with pytest.raises(UnsupportedModelError, match="many.pth: more than 32 tensors; this server's limit is 32"):
        limits.check_file(path)  # from the keys in its pickle, read opcode by opcode
    torch.save({f"g{i}.weight": torch.zeros(1) for i in range(100)}, path)
    with pytest.raises(UnsupportedModelError, match=r"holds 10\d storages; this server's limit is 32 tensors"):
        limits.check_file(path)  # from the zip's directory alone


def test_a_huge_safetensors_header_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    header = json.dumps({"__metadata__": {"pad": "x" * 5000}}).encode()
    path = tmp_path / "big-header.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    monkeypatch.setattr(limits, "MAX_HEADER_BYTES", 4096)
    monkeypatch.setattr(limits.json, "loads", lambda *a: pytest.fail("parsed"))
    with pytest.raises(UnsupportedModelError, match=r"big-header.safetensors: a safetensors header of 0.0 MB"):
        limits.check_file(path)


def test_declared_parameters_are_bounded_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "wide.safetensors"
    save_file({"conv.weight": torch.zeros(64, 64, 3, 3)}, str(path))
    monkeypatch.setattr(limits, "MAX_PARAMETERS", 1000)
    with pytest.raises(UnsupportedModelError, match="declares 0M parameters, over this server's limit"):
        limits.check_file(path)


def test_deeply_nested_keys_are_refused(tmp_path):
    path = tmp_path / "nested.safetensors"
    save_file({".".join(["a"] * 100) + ".weight": torch.zeros(1)}, str(path))
    with pytest.raises(UnsupportedModelError, match="nested deeper than 64 levels"):
        limits.check_file(path)


def test_a_file_just_over_the_cap_says_by_how_much(tmp_path):
    path = tmp_path / "big.pth"
    path.write_bytes(b"\0" * (5 * 2**20 + 10))
    with pytest.raises(UnsupportedModelError, match=r"5,242,890 bytes \(5.00 MB\) is over this server's limit "
                                                    r"of 5 MB"):
        resolve_custom(str(path), max_weights_mb=5)

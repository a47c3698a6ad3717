"""state_dict: the one comparison of a checkpoint's keys and shapes with a network, used by detection and the
loader; reading and unwrapping stay a leaf below the architectures."""

from __future__ import annotations

import pytest
import torch

from gan_models.archs import build_arch
from gan_models.errors import WeightsError
from gan_models.state_dict import (
    KeyMismatch,
    compare_keys,
    load_state_dict_strict,
    top_level_groups,
    unwrap_state_dict,
)
from tests.conftest import TINY_KWARGS


def _net(**changes) -> torch.nn.Module:
    return build_arch("srvgg_compact", **{**TINY_KWARGS["srvgg_compact"], **changes})


def test_identical_keys_and_shapes_compare_equal():
    state = _net().state_dict()
    mismatch = compare_keys(state, _net().state_dict())
    assert not mismatch and mismatch == KeyMismatch()
    with torch.device("meta"):  # detection compares against a network built without memory
        assert not compare_keys(state, _net().state_dict())


def test_missing_unexpected_and_wrong_shape_are_each_listed():
    expected = _net().state_dict()
    state = dict(expected)
    del state["body.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["body.1.weight"] = torch.zeros(99)
    mismatch = compare_keys(state, expected)
    assert mismatch.missing == ("body.0.weight",) and mismatch.unexpected == ("extra.weight",)
    assert mismatch.wrong_shape == (f"body.1.weight: file (99,) vs network {tuple(expected['body.1.weight'].shape)}",)
    assert mismatch.brief() == ("missing body.0.weight; unexpected extra.weight; wrong shape body.1.weight: file (99,) "
                                f"vs network {tuple(expected['body.1.weight'].shape)}")
    assert mismatch.detailed().startswith("missing: body.0.weight; unexpected: extra.weight; wrong shape: ")


def test_detailed_shows_at_most_eight_keys_and_the_count():
    mismatch = KeyMismatch(missing=tuple(f"k{i}" for i in range(12)))
    assert mismatch.detailed() == "missing: k0, k1, k2, k3, k4, k5, k6, k7, ... (12 in all)"
    assert mismatch.brief() == "missing k0 (+11)"


def test_strict_load_refuses_with_the_comparison_and_loads_nothing():
    model, wider = _net(), _net(num_feat=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"^file\.pth: does not match SRVGGNetCompact .*wrong shape: "
                                          r"body\.0\.bias: file \(16,\) vs network \(8,\)"):
        load_state_dict_strict(model, wider.state_dict(), source="file.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_unwrap_flattens_training_files_and_lists_their_groups():
    g = _net().state_dict()
    state = unwrap_state_dict({"netG_A": g, "netG_B": {f"module.{k}": v for k, v in g.items()}, "epoch": 3})
    assert top_level_groups(state) == ["netG_A", "netG_B"]
    assert set(unwrap_state_dict(state, key_prefix="netG_B.")) == set(g)

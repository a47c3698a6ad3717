"""Names removed from the public API in the last release without a deprecation come back for one release, warning."""

from __future__ import annotations

import pytest
import torch

import gan_models
from gan_models.weights import LoadedModel, WeightsSource


@pytest.mark.parametrize("name", ["load_generator", "load_generator_with_source", "load_with_fallback"])
def test_removed_loader_warns_and_still_loads(name, tiny_specs):
    spec = tiny_specs["upscale"]
    with pytest.warns(DeprecationWarning, match=rf"{name}\(spec\) is deprecated .*use load_model\(spec\)"):
        result = getattr(gan_models, name)(spec)
    expected = gan_models.load_model(spec, allow_fallback=False).module.state_dict()
    module = {"load_generator": lambda r: r, "load_generator_with_source": lambda r: r[0],
              "load_with_fallback": lambda r: r.module}[name](result)
    assert not module.training and all(torch.equal(module.state_dict()[k], v) for k, v in expected.items())
    if name == "load_generator_with_source":
        assert isinstance(result[1], WeightsSource) and result[1].path == spec.bundled
    if name == "load_with_fallback":
        assert isinstance(result, LoadedModel) and not result.fell_back

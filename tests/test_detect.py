"""Detection: checkpoints in the publishers' key layouts (tiny widths, same structure) → family, numbers, range."""

from __future__ import annotations

import re

import pytest
import torch

from gan_models.archs import ARCHS, STATE_BUILT_ARCHS, build_arch
from gan_models.archs.rrdbnet import esrgan_to_basicsr
from gan_models.detect import detect_network, find_generators
from gan_models.errors import UnsupportedModelError
from gan_models.weights import canonicalize_state_dict, load_state_dict_strict, unwrap_state_dict
from tests.conftest import TINY_KWARGS


def _state(arch: str, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_arch(arch, **kwargs).state_dict()


def _junyanz_old_instance_norm_stats(**kwargs) -> dict[str, torch.Tensor]:
    """A junyanz ResnetGenerator file as old PyTorch (< 0.4) wrote it: InstanceNorm running statistics included."""
    model = build_arch("resnet_generator", **kwargs)
    out = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            out[f"{name}.running_mean"] = torch.zeros(module.num_features)
            out[f"{name}.running_var"] = torch.ones(module.num_features)
    return out


def _old_esrgan_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """basicsr RRDBNet keys written back in the original ESRGAN code's Sequential layout (x4)."""
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{n_blocks}", "conv_up1": "model.3",
             "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    out = {}
    for key, value in sd.items():
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$", key):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = value
        else:
            base, param = key.rsplit(".", 1)
            out[f"{names[base]}.{param}"] = value
    return out


CASES = {
    # name: (state dict in the publisher's layout, expected arch, expected kwargs, task, range, scale, multiple)
    "junyanz-cyclegan-old-instancenorm-stats": (
        lambda: _junyanz_old_instance_norm_stats(**TINY_KWARGS["resnet_generator"]),
        "resnet_generator", TINY_KWARGS["resnet_generator"], "style", (-1.0, 1.0), 1, 4),
    "junyanz-cyclegan-9-blocks-dataparallel": (
        lambda: {f"module.{k}": v for k, v in _state("resnet_generator", ngf=4, n_blocks=9).items()},
        "resnet_generator", {"in_channels": 3, "out_channels": 3, "ngf": 4, "n_blocks": 9}, "style", (-1.0, 1.0), 1, 4),
    "junyanz-pix2pix-batchnorm": (
        lambda: _state("unet_generator", num_downs=6, ngf=4, norm="batch"),
        "unet_generator", {"in_channels": 3, "out_channels": 3, "num_downs": 6, "ngf": 4, "norm": "batch"},
        "sketch2photo", (-1.0, 1.0), 1, 64),
    "junyanz-pix2pix-instancenorm": (
        lambda: _state("unet_generator", num_downs=5, ngf=4, norm="instance"),
        "unet_generator", {"in_channels": 3, "out_channels": 3, "num_downs": 5, "ngf": 4, "norm": "instance"},
        "sketch2photo", (-1.0, 1.0), 1, 32),
    "huggan-pix2pix": (
        lambda: _meta_state("huggan_unet"), "huggan_unet", {"in_channels": 3, "out_channels": 3},
        "sketch2photo", (-1.0, 1.0), 1, 256),
    "lornatang-srgan-training-checkpoint": (
        lambda: {"state_dict": {f"_orig_mod.{k}": v for k, v in _state("srresnet", **TINY_KWARGS["srresnet"]).items()},
                 "ema_state_dict": {}, "epoch": 3, "psnr": 27.1},
        "srresnet", TINY_KWARGS["srresnet"], "upscale", (0.0, 1.0), 4, 1),
    "srresnet-x2": (
        lambda: _state("srresnet", channels=8, num_rcb=1, upscale=2),
        "srresnet", {"in_channels": 3, "out_channels": 3, "channels": 8, "num_rcb": 1, "upscale": 2},
        "upscale", (0.0, 1.0), 2, 1),
    "realesrgan-x4plus-params-ema": (
        lambda: {"params_ema": _state("rrdbnet", **TINY_KWARGS["rrdbnet"])},
        "rrdbnet", TINY_KWARGS["rrdbnet"], "upscale", (0.0, 1.0), 4, 1),
    "realesrgan-x2-unshuffle": (
        lambda: _state("rrdbnet", **{**TINY_KWARGS["rrdbnet"], "scale": 2}),
        "rrdbnet", {**TINY_KWARGS["rrdbnet"], "scale": 2}, "upscale", (0.0, 1.0), 2, 2),
    "ai-forever-x8": (
        lambda: _state("rrdbnet", **{**TINY_KWARGS["rrdbnet"], "scale": 8}),
        "rrdbnet", {**TINY_KWARGS["rrdbnet"], "scale": 8}, "upscale", (0.0, 1.0), 8, 1),
    "original-esrgan-model-n-layout": (
        lambda: _old_esrgan_layout(_state("rrdbnet", **TINY_KWARGS["rrdbnet"])),
        "rrdbnet_esrgan", TINY_KWARGS["rrdbnet"], "upscale", (0.0, 1.0), 4, 1),
    "realesr-general-x4v3-params": (
        lambda: {"params": _state("srvgg_compact", **TINY_KWARGS["srvgg_compact"])},
        "srvgg_compact", TINY_KWARGS["srvgg_compact"], "upscale", (0.0, 1.0), 4, 1),
    "srvgg-x2-more-convs": (
        lambda: _state("srvgg_compact", num_feat=4, num_conv=5, upscale=2),
        "srvgg_compact", {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_conv": 5, "upscale": 2,
                          "act_type": "prelu"}, "upscale", (0.0, 1.0), 2, 1),
}


def _meta_state(arch: str, **kwargs) -> dict[str, torch.Tensor]:
    # Shapes only: the huggan U-Net has fixed 64..512 widths (218 MB), and detection never reads values.
    with torch.device("meta"):
        return build_arch(arch, **kwargs).state_dict()


@pytest.mark.parametrize("case", sorted(CASES))
def test_detects_family_and_numbers(case):
    make, arch, kwargs, task, value_range, scale, multiple = CASES[case]
    detection = detect_network(make())
    assert detection.arch == arch
    assert dict(detection.arch_kwargs) == kwargs
    assert (detection.task, detection.value_range, detection.scale, detection.size_multiple) == (
        task, value_range, scale, multiple)
    assert detection.key_prefix is None and detection.summary
    # A detection is a promise that the file loads strictly: check it for the ARCHS families.
    if arch in ARCHS and case != "huggan-pix2pix":
        model = build_arch(arch, **kwargs)
        load_state_dict_strict(model, canonicalize_state_dict(make(), model=model), source=case)


def test_instancenorm_networks_are_not_tiled_and_sr_networks_are():
    assert detect_network(CASES["junyanz-pix2pix-batchnorm"][0]()).tile is None
    assert detect_network(CASES["junyanz-cyclegan-9-blocks-dataparallel"][0]()).tile is None
    assert detect_network(CASES["realesrgan-x2-unshuffle"][0]()).tile % 2 == 0


def test_original_esrgan_layout_runs_in_our_rrdbnet():
    torch.manual_seed(0)
    ours = build_arch("rrdbnet", **TINY_KWARGS["rrdbnet"]).eval()
    old = _old_esrgan_layout(ours.state_dict())
    assert esrgan_to_basicsr(old).keys() == ours.state_dict().keys()
    model = STATE_BUILT_ARCHS["rrdbnet_esrgan"]({"params_ema": {f"module.{k}": v for k, v in old.items()}})
    assert type(model) is type(ours)
    x = torch.rand(1, 3, 8, 6)
    with torch.inference_mode():
        assert torch.equal(model(x), ours(x))


def test_cyclegan_training_file_offers_its_generators_by_name():
    g_a = _state("resnet_generator", **TINY_KWARGS["resnet_generator"])
    g_b = _state("resnet_generator", ngf=4, n_blocks=3)
    d = _state("patchgan")
    state = {**{f"G_A.{k}": v for k, v in g_a.items()}, **{f"G_B.{k}": v for k, v in g_b.items()},
             **{f"D_A.{k}": v for k, v in d.items()}, **{f"D_B.{k}": v for k, v in d.items()}}
    found = find_generators(state)
    assert sorted(found) == ["G_A", "G_B"]  # the discriminators are not offered
    assert found["G_B"].key_prefix == "G_B." and found["G_B"].arch_kwargs["n_blocks"] == 3
    assert found["G_A"].arch_kwargs["ngf"] == 8


def test_nested_training_dict_offers_netG_A_and_netG_B():
    g = _state("resnet_generator", **TINY_KWARGS["resnet_generator"])
    found = find_generators({"netG_A": g, "netG_B": {f"module.{k}": v for k, v in g.items()}, "epoch": 200})
    assert sorted(found) == ["netG_A", "netG_B"]
    assert unwrap_state_dict({"netG_B": g}, key_prefix="netG_B.").keys() == g.keys()


def test_single_network_file_is_offered_whole():
    assert list(find_generators(_state("srvgg_compact", **TINY_KWARGS["srvgg_compact"]))) == [""]


def test_unsupported_file_is_one_short_line_naming_what_was_found_and_the_docs():
    state = {f"encoder.layer{i}.weight": torch.zeros(4, 4) for i in range(12)}
    with pytest.raises(UnsupportedModelError) as info:
        find_generators(state, source="owner/name/model.bin")
    assert str(info.value) == ("owner/name/model.bin: 12 tensors, first keys encoder.layer0.weight, "
                               "encoder.layer1.weight, encoder.layer2.weight; not a CycleGAN/Pix2Pix/SR generator we "
                               "know (supported layouts: docs/custom-models.md)")


def test_a_variant_we_do_not_build_says_what_differs():
    # conv_block.6 holds a 1x1 conv: neither junyanz's dropout layout (3x3 there) nor anything spandrel knows.
    g = _state("resnet_generator", **TINY_KWARGS["resnet_generator"], dropout=True)
    g = {k: (v[:, :, :1, :1] if k.endswith("conv_block.6.weight") else v) for k, v in g.items()}
    with pytest.raises(UnsupportedModelError, match=r"looks like ResnetGenerator ngf=8 n_blocks=2 \(instance norm, "
                                                    r"dropout\) but is a variant we do not build \(wrong shape "
                                                    r"model\.10\.conv_block\.6\.weight: file \(32, 32, 1, 1\) vs "
                                                    r"network \(32, 32, 3, 3\) \(\+1\)\)"):
        detect_network(g)


def test_discriminator_alone_is_not_a_generator():
    with pytest.raises(UnsupportedModelError, match="not a CycleGAN/Pix2Pix/SR generator we know"):
        detect_network(_state("patchgan"))


# --- architectures we have no file for: spandrel ----------------------------------------------------------------


def _span_state() -> dict[str, torch.Tensor]:
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2).state_dict()


def _swinir_state() -> dict[str, torch.Tensor]:
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    return SwinIR(img_size=16, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0,
                  upscale=4, upsampler="pixelshuffle", img_range=1.0).state_dict()


@pytest.mark.parametrize(("make", "name", "scale"), [(_span_state, "SPAN", 2), (_swinir_state, "SwinIR", 4)])
def test_sr_architectures_we_lack_are_detected_loaded_and_run_via_spandrel(make, name, scale):
    state = make()
    detection = detect_network({"params_ema": state})  # as BasicSR-style trainers publish them
    assert detection.arch == "spandrel" and name in detection.family
    assert detection.arch_kwargs["architecture"] == name
    assert (detection.task, detection.scale, detection.value_range) == ("upscale", scale, (0.0, 1.0))
    assert detection.tile is None or detection.tile % detection.size_multiple == 0
    model = STATE_BUILT_ARCHS["spandrel"]({"params_ema": state})  # the builder unwraps, as detection does
    side = 4 * detection.size_multiple
    with torch.inference_mode():
        y = model(torch.rand(1, 3, side, side + detection.size_multiple))
    assert y.shape == (1, 3, side * scale, (side + detection.size_multiple) * scale)
    assert torch.isfinite(y).all()

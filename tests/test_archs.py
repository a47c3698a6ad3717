"""Network architectures: exact checkpoint key layouts, output shapes and ranges, registry behaviour.

Full-size networks are built on the meta device (keys and shapes without allocating or initialising weights);
forward passes use small widths and tiny inputs, seeded, on CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_models.archs import (
    ARCHS,
    HugganUnetGenerator,
    NLayerDiscriminator,
    ResnetGenerator,
    RRDBNet,
    SRGANDiscriminator,
    SRResNet,
    SRVGGNetCompact,
    UnetGenerator,
    build_arch,
)
from gan_models.errors import GanModelsError


def meta(cls: type[nn.Module], **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cls(**kwargs)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def run(model: nn.Module, *size: int, low: float = -1.0, high: float = 1.0, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    x = torch.rand(*size) * (high - low) + low
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------- registry


def test_archs_keys_are_the_contract_names():
    assert set(ARCHS) == {
        "resnet_generator",
        "unet_generator",
        "huggan_unet",
        "srresnet",
        "rrdbnet",
        "srvgg_compact",
        "patchgan",
        "srgan_discriminator",
    }


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_arch_builds_with_defaults(name):
    with torch.device("meta"):
        model = build_arch(name)
    assert isinstance(model, ARCHS[name])


def test_build_arch_passes_kwargs():
    model = build_arch("resnet_generator", ngf=8, n_blocks=1)
    assert shapes(model)["model.1.weight"] == (8, 3, 7, 7)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(GanModelsError) as info:
        build_arch("no_such_net")
    message = str(info.value)
    assert "no_such_net" in message
    for name in ARCHS:
        assert name in message


@pytest.mark.parametrize("cls", list(ARCHS.values()))
def test_constructors_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(3)


def test_bad_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="batch, instance"):
        UnetGenerator(norm="group")
    with pytest.raises(ValueError, match="none"):
        NLayerDiscriminator(norm="layer")
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        RRDBNet(scale=3)
    with pytest.raises(ValueError, match="prelu"):
        SRVGGNetCompact(act_type="gelu")
    with pytest.raises(ValueError):
        SRResNet(upscale=5)


# ---------------------------------------------------------------- CycleGAN ResnetGenerator


def test_resnet_generator_official_layout():
    sd = shapes(meta(ResnetGenerator, ngf=64, n_blocks=9))
    expected = ["model.1", "model.4", "model.7"]
    expected += [f"model.{i}.conv_block.{j}" for i in range(10, 19) for j in (1, 5)]
    expected += ["model.19", "model.22", "model.26"]
    assert list(sd) == [f"{m}.{p}" for m in expected for p in ("weight", "bias")]
    assert len(sd) == 48
    assert sd["model.1.weight"] == (64, 3, 7, 7)
    assert sd["model.7.weight"] == (256, 128, 3, 3)
    assert sd["model.18.conv_block.5.weight"] == (256, 256, 3, 3)
    assert sd["model.19.weight"] == (256, 128, 3, 3)  # ConvTranspose2d stores (in, out, k, k)
    assert sd["model.22.weight"] == (128, 64, 3, 3)
    assert sd["model.26.weight"] == (3, 64, 7, 7)
    assert sd["model.26.bias"] == (3,)


def test_resnet_generator_six_block_and_small_variants():
    sd = shapes(meta(ResnetGenerator, ngf=64, n_blocks=6))
    assert len(sd) == 36
    assert "model.15.conv_block.5.weight" in sd
    assert sd["model.16.weight"] == (256, 128, 3, 3)
    assert sd["model.23.weight"] == (3, 64, 7, 7)
    small = shapes(meta(ResnetGenerator, ngf=32, n_blocks=6))
    assert small["model.16.weight"] == (128, 64, 3, 3)


def test_resnet_generator_instance_norm_has_no_state():
    model = ResnetGenerator(ngf=8, n_blocks=1)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    assert not list(model.buffers())


@pytest.mark.parametrize("size", [(1, 3, 32, 32), (2, 3, 24, 40)])
def test_resnet_generator_forward(size):
    y = run(ResnetGenerator(ngf=8, n_blocks=2), *size)
    assert y.shape == size
    assert y.abs().max() <= 1.0
    assert y.std() > 0


def test_resnet_generator_channels():
    y = run(ResnetGenerator(in_channels=1, out_channels=2, ngf=4, n_blocks=1), 1, 1, 16, 16)
    assert y.shape == (1, 2, 16, 16)


# ---------------------------------------------------------------- junyanz UnetGenerator


def _level(k: int) -> str:
    """Key prefix of the k-th U-Net level's Sequential (1 = outermost)."""
    return "model.model" if k == 1 else "model.model.1" + ".model.3" * (k - 2) + ".model"


def test_unet_generator_batch_layout():
    sd = shapes(meta(UnetGenerator, num_downs=8, ngf=64, norm="batch"))
    assert sd["model.model.0.weight"] == (64, 3, 4, 4)
    assert "model.model.0.bias" not in sd  # BatchNorm follows: no conv bias
    assert sd["model.model.3.weight"] == (128, 3, 4, 4)  # outermost up conv keeps its bias
    assert sd["model.model.3.bias"] == (3,)
    assert sd["model.model.1.model.1.weight"] == (128, 64, 4, 4)
    assert sd["model.model.1.model.2.running_mean"] == (128,)
    assert sd["model.model.1.model.5.weight"] == (256, 64, 4, 4)
    assert sd["model.model.1.model.3.model.1.weight"] == (256, 128, 4, 4)
    innermost = _level(8)
    assert innermost == "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model"
    assert sd[f"{innermost}.1.weight"] == (512, 512, 4, 4)
    assert sd[f"{innermost}.3.weight"] == (512, 512, 4, 4)
    assert sd[f"{innermost}.4.weight"] == (512,)
    assert not any(k.startswith(f"{innermost}.3.model") for k in sd)
    # Six middle levels with two BatchNorms each, plus the innermost up-path one.
    assert sum(1 for k in sd if k.endswith("num_batches_tracked")) == 13


def test_unet_generator_instance_has_biases_and_no_norm_state():
    batch = shapes(meta(UnetGenerator, num_downs=8, norm="batch"))
    inst = shapes(meta(UnetGenerator, num_downs=8, norm="instance"))
    assert "model.model.0.bias" in inst and "model.model.0.bias" not in batch
    assert "model.model.1.model.1.bias" in inst and "model.model.1.model.1.bias" not in batch
    assert not any("running" in k for k in inst)
    # The conv weights are the same; only biases (instance) or BN parameters (batch) differ.
    assert {k: v for k, v in inst.items() if k.endswith("weight")} == {
        k: v for k, v in batch.items() if k.endswith("weight") and len(v) == 4
    }


def test_unet_generator_dropout_keeps_keys():
    plain = meta(UnetGenerator, num_downs=7, ngf=8)
    dropped = meta(UnetGenerator, num_downs=7, ngf=8, use_dropout=True)
    assert list(shapes(plain)) == list(shapes(dropped))
    assert sum(isinstance(m, nn.Dropout) for m in dropped.modules()) == 2


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_generator_forward(norm):
    model = UnetGenerator(num_downs=5, ngf=8, norm=norm)
    y = run(model, 2, 3, 32, 64)
    assert y.shape == (2, 3, 32, 64)
    assert y.abs().max() <= 1.0


# ---------------------------------------------------------------- huggan GeneratorUNet


def test_huggan_unet_layout():
    sd = shapes(meta(HugganUnetGenerator))
    expected = [f"down{i}.model.0.weight" for i in range(1, 9)]
    expected += [f"up{i}.model.0.weight" for i in range(1, 8)]
    expected += ["final.2.weight", "final.2.bias"]
    assert list(sd) == expected
    assert sd["down1.model.0.weight"] == (64, 3, 4, 4)
    assert sd["down8.model.0.weight"] == (512, 512, 4, 4)
    assert sd["up1.model.0.weight"] == (512, 512, 4, 4)  # ConvTranspose2d: (in, out, k, k)
    assert sd["up2.model.0.weight"] == (1024, 512, 4, 4)
    assert sd["up7.model.0.weight"] == (256, 64, 4, 4)
    assert sd["final.2.weight"] == (3, 128, 4, 4)


def test_huggan_unet_dropout_placement():
    model = meta(HugganUnetGenerator)
    with_dropout = {n.split(".")[0] for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert with_dropout == {"down4", "down5", "down6", "down7", "down8", "up1", "up2", "up3", "up4"}


def test_huggan_unet_forward_256():
    with torch.device("meta"):
        model = HugganUnetGenerator()
    model = model.to_empty(device="cpu")
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, 0.0, 0.02)
    y = run(model, 1, 3, 256, 256)
    assert y.shape == (1, 3, 256, 256)
    assert y.abs().max() <= 1.0


# ---------------------------------------------------------------- SRResNet (SRGAN)


def test_srresnet_layout():
    sd = shapes(meta(SRResNet))
    assert sd["conv1.0.weight"] == (64, 3, 9, 9)
    assert sd["conv1.1.weight"] == (1,)
    assert "trunk.0.rcb.0.bias" not in sd
    assert sd["trunk.0.rcb.2.weight"] == (1,)
    assert sd["trunk.15.rcb.4.running_var"] == (64,)
    assert "trunk.16.rcb.0.weight" not in sd
    assert sd["conv2.0.weight"] == (64, 64, 3, 3)
    assert sd["conv2.1.num_batches_tracked"] == ()
    assert sd["upsampling.1.upsample_block.0.weight"] == (256, 64, 3, 3)
    assert sd["upsampling.1.upsample_block.2.weight"] == (1,)
    assert "upsampling.2.upsample_block.0.weight" not in sd
    assert sd["conv3.weight"] == (3, 64, 9, 9)


@pytest.mark.parametrize("upscale", [2, 3, 4, 8])
def test_srresnet_forward(upscale):
    y = run(SRResNet(channels=8, num_rcb=2, upscale=upscale), 1, 3, 6, 5, low=0.0)
    assert y.shape == (1, 3, 6 * upscale, 5 * upscale)
    assert y.min() >= 0.0 and y.max() <= 1.0


# ---------------------------------------------------------------- RRDBNet (ESRGAN / Real-ESRGAN)


def test_rrdbnet_layout():
    sd = shapes(meta(RRDBNet))
    assert len(sd) == 702
    assert sd["conv_first.weight"] == (64, 3, 3, 3)
    assert sd["body.0.rdb1.conv1.weight"] == (32, 64, 3, 3)
    assert sd["body.22.rdb3.conv4.weight"] == (32, 160, 3, 3)
    assert sd["body.22.rdb3.conv5.weight"] == (64, 192, 3, 3)
    assert "body.23.rdb1.conv1.weight" not in sd
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        assert sd[f"{name}.weight"] == (64, 64, 3, 3)
    assert sd["conv_last.weight"] == (3, 64, 3, 3)
    assert "conv_up3.weight" not in sd


def test_rrdbnet_scale_variants():
    assert shapes(meta(RRDBNet, scale=2))["conv_first.weight"] == (64, 12, 3, 3)
    assert shapes(meta(RRDBNet, scale=1))["conv_first.weight"] == (64, 48, 3, 3)
    assert shapes(meta(RRDBNet, scale=8))["conv_up3.weight"] == (64, 64, 3, 3)


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_rrdbnet_forward(scale):
    model = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=scale)
    y = run(model, 1, 3, 8, 12, low=0.0)
    assert y.shape == (1, 3, 8 * scale, 12 * scale)


# ---------------------------------------------------------------- SRVGGNetCompact


def test_srvgg_general_x4v3_layout():
    sd = shapes(meta(SRVGGNetCompact, num_feat=64, num_conv=32, upscale=4))
    assert sd["body.0.weight"] == (64, 3, 3, 3)
    assert sd["body.1.weight"] == (64,)  # PReLU, one slope per channel
    assert sd["body.64.weight"] == (64, 64, 3, 3)
    assert sd["body.65.weight"] == (64,)
    assert sd["body.66.weight"] == (48, 64, 3, 3)
    assert sd["body.66.bias"] == (48,)
    assert "body.67.weight" not in sd
    assert len(sd) == 33 * 3 + 2


def test_srvgg_relu_has_no_activation_keys():
    sd = shapes(meta(SRVGGNetCompact, num_conv=4, act_type="relu"))
    assert "body.1.weight" not in sd
    assert sd["body.10.weight"] == (48, 64, 3, 3)


@pytest.mark.parametrize("upscale", [1, 2, 4])
def test_srvgg_forward(upscale):
    y = run(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=upscale), 1, 3, 7, 9, low=0.0)
    assert y.shape == (1, 3, 7 * upscale, 9 * upscale)


def test_srvgg_learns_a_residual_over_nearest_upsampling():
    model = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    nn.init.zeros_(model.body[-1].weight)
    nn.init.zeros_(model.body[-1].bias)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        y = model.eval()(x)
    assert torch.equal(y, x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


# ---------------------------------------------------------------- discriminators


def test_patchgan_junyanz_layout_and_70px_patches():
    sd = shapes(meta(NLayerDiscriminator))
    assert sd["model.0.weight"] == (64, 3, 4, 4) and "model.0.bias" in sd
    assert sd["model.2.weight"] == (128, 64, 4, 4) and "model.2.bias" not in sd  # BatchNorm follows
    assert sd["model.3.running_mean"] == (128,)
    assert sd["model.8.weight"] == (512, 256, 4, 4)
    assert sd["model.11.weight"] == (1, 512, 4, 4)
    y = run(NLayerDiscriminator(ndf=4), 1, 3, 256, 256)
    assert y.shape == (1, 1, 30, 30)


def test_patchgan_receptive_field_is_70():
    model = NLayerDiscriminator(ndf=4, norm="none").eval()
    x = torch.rand(1, 3, 160, 160, requires_grad=True)
    model(x)[0, 0, 8, 8].backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero()
    assert rows.max() - rows.min() + 1 == 70


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_patchgan_norms(norm):
    model = NLayerDiscriminator(in_channels=6, ndf=4, n_layers=2, norm=norm)
    sd = shapes(model)
    assert ("model.2.bias" in sd) == (norm != "batch")
    assert ("model.3.weight" in sd) == (norm == "batch")
    y = run(model, 2, 6, 64, 48)
    assert y.shape == (2, 1, 14, 10)


def test_patchgan_spectral_norm_on_and_off():
    plain = NLayerDiscriminator(ndf=4, norm="none")
    sn = NLayerDiscriminator(ndf=4, norm="none", spectral_norm=True)
    convs = [m for m in sn.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert all(nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert "model.0.parametrizations.weight.original" in sn.state_dict()
    assert "model.0.weight" in plain.state_dict()
    sn.train()
    for _ in range(20):  # power iterations converge on the largest singular value
        sn(torch.rand(1, 3, 32, 32))
    weight = convs[1].weight.detach().flatten(1)
    assert torch.linalg.matrix_norm(weight, ord=2) == pytest.approx(1.0, abs=0.05)
    assert run(sn, 1, 3, 64, 64).shape == (1, 1, 6, 6)


def test_srgan_discriminator_layout():
    sd = shapes(meta(SRGANDiscriminator))
    assert sd["features.0.weight"] == (64, 3, 3, 3) and "features.0.bias" in sd
    assert sd["features.2.weight"] == (64, 64, 3, 3) and "features.2.bias" not in sd
    assert sd["features.20.weight"] == (512, 512, 3, 3)
    assert sd["features.21.running_var"] == (512,)
    assert sd["classifier.0.weight"] == (1024, 512 * 6 * 6)
    assert sd["classifier.2.weight"] == (1, 1024)


@pytest.mark.parametrize("size", [(2, 3, 32, 32), (1, 3, 96, 96), (1, 3, 50, 41)])
def test_srgan_discriminator_any_size(size):
    y = run(SRGANDiscriminator(channels=4), *size)
    assert y.shape == (size[0], 1)


def test_srgan_discriminator_rejects_tiny_inputs():
    with pytest.raises(ValueError, match="32x32"):
        run(SRGANDiscriminator(channels=4), 1, 3, 16, 64)

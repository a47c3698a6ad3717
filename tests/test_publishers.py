"""Layouts as their publishers' own code builds and saves them, detected, loaded and compared with that code.

Each reference network below re-implements the publisher's module classes with their exact attribute names and
layer order (junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py; tmabraham/UPIT upit/models/cyclegan.py;
the original ESRGAN / old BasicSR codes/models/modules/block.py + architecture.py), is saved the way that code saves
it, and the network we load from the file must give the same output: max difference 0.0 (float eps for spandrel).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gan_models import custom
from gan_models.detect import detect_network, find_generators
from gan_models.errors import UnsupportedModelError, WeightsError
from gan_models.specs import get_spec
from gan_models.weights import load_model
from tests.conftest import hub_cache_path


@pytest.fixture(autouse=True)
def _fresh_cache():
    custom.clear_cache()
    yield
    custom.clear_cache()


def _max_diff(reference: nn.Module, loaded: nn.Module, *, side: int = 16, value_range=(0.0, 1.0)) -> float:
    torch.manual_seed(1)
    low, high = value_range
    x = torch.rand(1, 3, side, side) * (high - low) + low
    with torch.inference_mode():
        return float((reference.eval()(x.clone()) - loaded.eval()(x.clone())).abs().max())


def _randomise_norm_statistics(net: nn.Module) -> nn.Module:
    """Trained BatchNorm statistics (random init leaves mean 0, var 1, which would hide a missing one)."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net


# --- junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py -------------------------------------------------------


def get_norm_layer(norm_type="instance"):
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        self.conv_block = self.build_conv_block(dim, padding_type, norm_layer, use_dropout, use_bias)

    def build_conv_block(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        conv_block = []
        p = 0
        if padding_type == "reflect":
            conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            conv_block += [nn.Dropout(0.5)]
        p = 0
        if padding_type == "reflect":
            conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
        return nn.Sequential(*conv_block)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                 padding_type="reflect"):
        super().__init__()
        if type(norm_layer) is functools.partial:
            use_bias = norm_layer.func == nn.InstanceNorm2d
        else:
            use_bias = norm_layer == nn.InstanceNorm2d
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        mult = 2**n_downsampling
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                                  use_dropout=use_dropout, use_bias=use_bias)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1,
                                         output_padding=1, bias=use_bias),
                      norm_layer(int(ngf * mult / 2)), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3)]
        model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
        model += [nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, input):  # noqa: A002 - junyanz's name
        return self.model(input)


def _junyanz(norm: str, use_dropout: bool, n_blocks: int = 2) -> nn.Module:
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, ngf=4, norm_layer=get_norm_layer(norm), use_dropout=use_dropout, n_blocks=n_blocks)
    return _randomise_norm_statistics(net)


@pytest.mark.parametrize(("norm", "use_dropout"), [("batch", False), ("batch", True), ("instance", True)])
def test_junyanz_resnet_generator_variants_load_and_match(tmp_path, norm, use_dropout):
    reference = _junyanz(norm, use_dropout)
    path = tmp_path / "latest_net_G.pth"
    torch.save(reference.cpu().state_dict(), path)  # BaseModel.save_networks on CPU
    spec = get_spec(str(path))
    expected = {"norm": "batch"} if norm == "batch" else {}
    assert dict(spec.arch_kwargs) == {"in_channels": 3, "out_channels": 3, "ngf": 4, "n_blocks": 2, **expected,
                                      **({"dropout": True} if use_dropout else {})}
    assert (spec.arch, spec.task, spec.value_range) == ("resnet_generator", "style", (-1.0, 1.0))
    assert f"({norm} norm" in spec.description and ("dropout" in spec.description) == use_dropout
    assert _max_diff(reference, load_model(spec).module, value_range=(-1, 1)) == 0.0


# --- tmabraham/UPIT, upit/models/cyclegan.py (PyTorchModelHubMixin saves pytorch_model.bin) --------------------------


def pad_conv_norm_relu(ch_in, ch_out, pad_mode, norm_layer, ks=3, bias=True, pad=1, stride=1, activ=True):
    layers = []
    if pad_mode == "reflection":
        layers.append(nn.ReflectionPad2d(pad))
    p = pad if pad_mode == "zeros" else 0
    conv = nn.Conv2d(ch_in, ch_out, kernel_size=ks, padding=p, stride=stride, bias=bias)
    nn.init.kaiming_normal_(conv.weight)
    layers += [conv, norm_layer(ch_out)]
    if activ:
        layers.append(nn.ReLU(inplace=True))
    return layers


def convT_norm_relu(ch_in, ch_out, norm_layer, ks=3, stride=2, bias=True):  # noqa: N802 - UPIT's name
    return [nn.ConvTranspose2d(ch_in, ch_out, kernel_size=ks, stride=stride, padding=1, output_padding=1, bias=bias),
            norm_layer(ch_out), nn.ReLU(True)]


class UpitResnetBlock(nn.Module):  # UPIT's ResnetBlock
    def __init__(self, dim, pad_mode="reflection", norm_layer=None, dropout=0.0, bias=True):
        super().__init__()
        norm_layer = norm_layer or nn.InstanceNorm2d
        layers = pad_conv_norm_relu(dim, dim, pad_mode, norm_layer, bias=bias)
        if dropout != 0:
            layers.append(nn.Dropout(dropout))
        layers += pad_conv_norm_relu(dim, dim, pad_mode, norm_layer, bias=bias, activ=False)
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


def resnet_generator(ch_in, ch_out, n_ftrs=64, norm_layer=None, dropout=0.0, n_blocks=9, pad_mode="reflection"):
    norm_layer = norm_layer or nn.InstanceNorm2d
    bias = norm_layer == nn.InstanceNorm2d
    layers = pad_conv_norm_relu(ch_in, n_ftrs, "reflection", norm_layer, pad=3, ks=7, bias=bias)
    for _ in range(2):
        layers += pad_conv_norm_relu(n_ftrs, n_ftrs * 2, "zeros", norm_layer, stride=2, bias=bias)
        n_ftrs *= 2
    layers += [UpitResnetBlock(n_ftrs, pad_mode, norm_layer, dropout, bias) for _ in range(n_blocks)]
    for _ in range(2):
        layers += convT_norm_relu(n_ftrs, n_ftrs // 2, norm_layer, bias=bias)
        n_ftrs //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(n_ftrs, ch_out, kernel_size=7, padding=0), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator(ch_in, n_ftrs=64, n_layers=3, norm_layer=None):
    norm_layer = norm_layer or nn.InstanceNorm2d
    layers = [nn.Conv2d(ch_in, n_ftrs, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for _ in range(n_layers - 1):
        layers += [nn.Conv2d(n_ftrs, n_ftrs * 2, 4, 2, 1), norm_layer(n_ftrs * 2), nn.LeakyReLU(0.2, True)]
        n_ftrs *= 2
    layers += [nn.Conv2d(n_ftrs, n_ftrs * 2, 4, 1, 1), norm_layer(n_ftrs * 2), nn.LeakyReLU(0.2, True),
               nn.Conv2d(n_ftrs * 2, 1, 4, 1, 1)]
    return nn.Sequential(*layers)


class CycleGAN(nn.Module):
    def __init__(self, ch_in=3, ch_out=3, n_features=64, disc_layers=3, gen_blocks=9, drop=0.0, norm_layer=None):
        super().__init__()
        self.D_A = discriminator(ch_in, n_features, disc_layers, norm_layer)
        self.D_B = discriminator(ch_in, n_features, disc_layers, norm_layer)
        self.G_A = resnet_generator(ch_in, ch_out, n_features, norm_layer, drop, gen_blocks)
        self.G_B = resnet_generator(ch_in, ch_out, n_features, norm_layer, drop, gen_blocks)


def _upit(**kwargs) -> CycleGAN:
    torch.manual_seed(0)
    return _randomise_norm_statistics(CycleGAN(n_features=4, gen_blocks=2, **kwargs)).eval()


def test_upit_cyclegan_file_offers_g_a_and_g_b_and_g_b_matches(tmp_path):
    reference = _upit()
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    assert "G_B.1.weight" in reference.state_dict()  # no `model.` level: the Sequential is the generator
    assert sorted(find_generators(torch.load(path))) == ["G_A", "G_B"]
    spec = get_spec(f"{path}#G_B")
    assert (spec.arch, spec.key_prefix, spec.task) == ("resnet_generator", "G_B.", "style")
    assert _max_diff(reference.G_B, load_model(spec).module, value_range=(-1, 1)) == 0.0
    assert _max_diff(reference.G_A, load_model(get_spec(f"{path}#G_A")).module, value_range=(-1, 1)) == 0.0


def test_upit_hub_id_with_network_selector(offline_hub):
    """The documented id `tmabraham/horse2zebra_cyclegan#G_B`, on a file of that repo's layout."""
    reference = _upit(drop=0.5, norm_layer=nn.BatchNorm2d)
    location = SimpleNamespace(repo_type="model", repo_id="tmabraham/horse2zebra_cyclegan", revision="main",
                               filename="pytorch_model.bin")
    torch.save(reference.state_dict(), hub_cache_path(offline_hub, location))
    spec = get_spec("tmabraham/horse2zebra_cyclegan#G_B")
    assert dict(spec.arch_kwargs)["dropout"] is True and dict(spec.arch_kwargs)["norm"] == "batch"
    assert _max_diff(reference.G_B, load_model(spec).module, value_range=(-1, 1)) == 0.0


# --- the original ESRGAN code (old BasicSR block.py / architecture.py): `model.N` keys, x2 and x1 ------------------


def sequential(*args):
    if len(args) == 1:
        if isinstance(args[0], OrderedDict):
            raise NotImplementedError("sequential does not support OrderedDict input.")
        return args[0]
    modules = []
    for module in args:
        if isinstance(module, nn.Sequential):
            modules.extend(module.children())
        elif isinstance(module, nn.Module):
            modules.append(module)
    return nn.Sequential(*modules)


def conv_block(in_nc, out_nc, kernel_size, stride=1, bias=True, act_type="relu"):
    c = nn.Conv2d(in_nc, out_nc, kernel_size=kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=bias)
    a = nn.LeakyReLU(0.2, True) if act_type == "leakyrelu" else nn.ReLU(True) if act_type else None
    return sequential(None, c, None, a)


class ShortcutBlock(nn.Module):
    def __init__(self, submodule):
        super().__init__()
        self.sub = submodule

    def forward(self, x):
        return x + self.sub(x)


class ResidualDenseBlock_5C(nn.Module):  # noqa: N801 - the publisher's name
    def __init__(self, nc, kernel_size=3, gc=32, stride=1, bias=True, act_type="leakyrelu"):
        super().__init__()
        self.conv1 = conv_block(nc, gc, kernel_size, stride, bias=bias, act_type=act_type)
        self.conv2 = conv_block(nc + gc, gc, kernel_size, stride, bias=bias, act_type=act_type)
        self.conv3 = conv_block(nc + 2 * gc, gc, kernel_size, stride, bias=bias, act_type=act_type)
        self.conv4 = conv_block(nc + 3 * gc, gc, kernel_size, stride, bias=bias, act_type=act_type)
        self.conv5 = conv_block(nc + 4 * gc, nc, 3, stride, bias=bias, act_type=None)

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(torch.cat((x, x1), 1))
        x3 = self.conv3(torch.cat((x, x1, x2), 1))
        x4 = self.conv4(torch.cat((x, x1, x2, x3), 1))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5.mul(0.2) + x


class RRDB(nn.Module):
    def __init__(self, nc, kernel_size=3, gc=32, stride=1, bias=True, act_type="leakyrelu"):
        super().__init__()
        self.RDB1 = ResidualDenseBlock_5C(nc, kernel_size, gc, stride, bias, act_type)
        self.RDB2 = ResidualDenseBlock_5C(nc, kernel_size, gc, stride, bias, act_type)
        self.RDB3 = ResidualDenseBlock_5C(nc, kernel_size, gc, stride, bias, act_type)

    def forward(self, x):
        return self.RDB3(self.RDB2(self.RDB1(x))).mul(0.2) + x


def upconv_blcok(in_nc, out_nc, upscale_factor=2, kernel_size=3, stride=1, bias=True, act_type="relu"):
    upsample = nn.Upsample(scale_factor=upscale_factor, mode="nearest")
    conv = conv_block(in_nc, out_nc, kernel_size, stride, bias=bias, act_type=act_type)
    return sequential(upsample, conv)


class OldRRDBNet(nn.Module):  # architecture.RRDBNet, upsample_mode='upconv'
    def __init__(self, in_nc, out_nc, nf, nb, gc=32, upscale=4, act_type="leakyrelu"):
        super().__init__()
        n_upscale = int(math.log(upscale, 2))
        fea_conv = conv_block(in_nc, nf, kernel_size=3, act_type=None)
        rb_blocks = [RRDB(nf, kernel_size=3, gc=32, stride=1, bias=True, act_type=act_type) for _ in range(nb)]
        lr_conv = conv_block(nf, nf, kernel_size=3, act_type=None)
        upsampler = [upconv_blcok(nf, nf, act_type=act_type) for _ in range(n_upscale)]
        hr_conv0 = conv_block(nf, nf, kernel_size=3, act_type=act_type)
        hr_conv1 = conv_block(nf, out_nc, kernel_size=3, act_type=None)
        self.model = sequential(fea_conv, ShortcutBlock(sequential(*rb_blocks, lr_conv)), *upsampler, hr_conv0,
                                hr_conv1)

    def forward(self, x):
        return self.model(x)


@pytest.mark.parametrize("scale", [2, 1])
def test_old_esrgan_without_pixel_unshuffle_falls_through_to_spandrel(tmp_path, scale):
    torch.manual_seed(0)
    reference = OldRRDBNet(3, 3, nf=8, nb=1, upscale=scale).eval()
    path = tmp_path / f"{scale}x_old.pth"
    torch.save(reference.state_dict(), path)
    detection = detect_network(torch.load(path))
    assert detection.arch == "spandrel" and detection.family == "ESRGAN (via spandrel)"
    assert (detection.scale, detection.task) == (scale, "upscale")  # the 1x rule: restoration is "upscale"
    spec = get_spec(str(path))
    diff = _max_diff(reference, load_model(spec).module)
    assert diff <= 1e-6


def test_a_near_miss_that_spandrel_cannot_build_says_both_truly(tmp_path):
    torch.manual_seed(0)
    state = OldRRDBNet(3, 3, nf=8, nb=1, upscale=2).state_dict()
    del state["model.1.sub.0.RDB1.conv2.0.weight"]
    with pytest.raises(UnsupportedModelError) as info:
        detect_network(state, source="x2_old.pth")
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    assert "looks like RRDBNet x2 " in message  # its true scale, not x4
    assert "spandrel could not build it: RRDBNet does not match the file: missing 1 key " \
           "(model.1.sub.0.RDB1.conv2.0.weight)" in message
    assert message.endswith("(supported layouts: docs/custom-models.md)")


def test_batch_norm_near_miss_is_described_as_batch_norm():
    state = _junyanz("batch", False).state_dict()
    state["model.10.conv_block.1.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(UnsupportedModelError, match=r"looks like ResnetGenerator ngf=4 n_blocks=2 \(batch norm\) but "
                                                    r"is a variant we do not build \(wrong shape model\.10\.conv"):
        detect_network(state)


# --- files that are not weights --------------------------------------------------------------------------------------


def test_git_lfs_pointer_is_named_as_such(tmp_path):
    path = tmp_path / "RealESRGAN_x4plus.pth"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4fa0d38905f75ac06eb49a7951b426670021be3"
                    "018265fd191d2125df9d682f1\nsize 67040989\n")
    with pytest.raises(WeightsError, match=r"RealESRGAN_x4plus\.pth: is a Git LFS pointer, not the weights: a "
                                           r"\d+-byte text file naming the real file; download the file itself"):
        get_spec(str(path))


def test_random_bytes_are_not_a_weights_file(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(bytes(range(7, 256)) * 40)
    with pytest.raises(WeightsError) as info:
        get_spec(str(path))
    assert str(info.value) == f"{path}: not a weights file (neither safetensors nor a PyTorch checkpoint)"


def test_hub_errors_name_the_id_not_the_cache_path(offline_hub):
    location = SimpleNamespace(repo_type="model", repo_id="me/broken", revision="main", filename="model.pth")
    target: Path = hub_cache_path(offline_hub, location)
    target.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsError) as info:
        get_spec("me/broken/model.pth")
    assert str(info.value).startswith("me/broken/model.pth: not a weights file")
    assert str(offline_hub) not in str(info.value)

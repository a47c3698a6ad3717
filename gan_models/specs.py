"""Every model the studio offers, written out by hand: what it is, where its weights live, what input it needs.

A ModelSpec is the only place that knows a model's numbers (value range, scale, size multiple, tiling advice).
SPECS is a literal dict; `spec_from_config` turns a `train.py` output folder into a local spec.

Revisions: every Hub download goes through `revision=`, so pinning a model is a one-line change here. The commit
shas could not be looked up while writing this file (the build machines reach no Hub and no model page; the public
code search holds no commit history for these repos), so each spec reads "main" and says so. Pin a sha from the
repo's "Files and versions" history before deploying where reproducibility matters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .errors import GanModelsError
from .settings import Settings

Task = Literal["style", "sketch2photo", "upscale"]
TASKS: tuple[Task, ...] = ("style", "sketch2photo", "upscale")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of the code needs to know about one model.

    Parameters:
        id: stable identifier used by the CLI, the app and the API.
        title: short human name for menus.
        task: "style" (CycleGAN), "sketch2photo" (Pix2Pix) or "upscale" (SRGAN family).
        arch, arch_kwargs: key in `archs.ARCHS` and its constructor arguments.
        repo_id, filename, revision, repo_type: the Hub file (revision pinned to a commit sha).
        key_prefix: picks one network out of a file that holds several (e.g. "G_B.").
        value_range: range of the network's input and output pixels.
        scale: output size / input size.
        size_multiple: input height and width must be multiples of this (the pipeline pads and crops).
        tile: default tile size in input pixels, or None when the network must see the whole image
            (InstanceNorm statistics change per tile, so CycleGAN/Pix2Pix nets are not tiled by default).
        tile_overlap: overlap between tiles in input pixels.
        input_size: the training resolution, where it matters to users (the Pix2Pix canvas).
        licence: licence of the weights as stated by their publisher.
        bundled: weights file shipped in `weights/` (our own defaults) or a local file, else None.
        fallback: id of a bundled spec to use when this spec's Hub file cannot be had.
        description: one line for users; source: where the facts above were found.
    """

    id: str
    title: str
    task: Task
    arch: str
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    repo_type: str = "model"
    key_prefix: str | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)
    scale: int = 1
    size_multiple: int = 4
    tile: int | None = None
    tile_overlap: int = 16
    input_size: int | None = None
    licence: str = ""
    bundled: Path | None = None
    fallback: str | None = None
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise GanModelsError(f"{self.id}: task must be one of {TASKS}, not {self.task!r}")
        if self.tile is not None and self.tile % self.size_multiple:
            raise GanModelsError(f"{self.id}: tile {self.tile} is not a multiple of {self.size_multiple}")
        object.__setattr__(self, "arch_kwargs", MappingProxyType(dict(self.arch_kwargs)))

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def is_bundled(self) -> bool:
        return self.bundled is not None and self.repo_id is None


# Official junyanz CycleGAN generators are served from http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/
# (scripts/download_cyclegan_model.sh), not from the Hub; the specs point at Hub Spaces that mirror those files.
_CYCLEGAN_9 = {"in_channels": 3, "out_channels": 3, "ngf": 64, "n_blocks": 9}
_UNPAIRED_SPACE = "davidpiscasio/unpaired-img2img"
_UNPAIRED_REV = "main"  # not pinned: no sha could be looked up offline (see module docstring)
_YANGUAN_SPACE = "Yanguan/CycleGAN"
_YANGUAN_REV = "main"  # not pinned: no sha could be looked up offline (see module docstring)


def _cyclegan(id: str, title: str, description: str, *, repo: str, rev: str, filename: str, **extra: Any) -> ModelSpec:
    return ModelSpec(
        id=id,
        title=title,
        task="style",
        arch="resnet_generator",
        arch_kwargs=_CYCLEGAN_9,
        repo_id=repo,
        filename=filename,
        revision=rev,
        repo_type=extra.pop("repo_type", "space"),
        value_range=(-1.0, 1.0),
        size_multiple=4,
        tile=None,
        licence=extra.pop("licence", "BSD-2-Clause (junyanz/pytorch-CycleGAN-and-pix2pix)"),
        fallback="default-style",
        description=description,
        **extra,
    )


SPECS: dict[str, ModelSpec] = {
    # --- Style transfer (CycleGAN) -----------------------------------------------------------------------------
    "style-monet": _cyclegan(
        "style-monet", "Photo → Monet", "Official CycleGAN photo→Monet generator (junyanz).",
        repo=_UNPAIRED_SPACE, rev=_UNPAIRED_REV,
        filename="checkpoints/style_monet_pretrained/latest_net_G.pth",
        source="HUB_CHECKPOINTS.md; Space davidpiscasio/unpaired-img2img",
    ),
    "style-vangogh": _cyclegan(
        "style-vangogh", "Photo → Van Gogh", "Official CycleGAN photo→Van Gogh generator (junyanz).",
        repo=_UNPAIRED_SPACE, rev=_UNPAIRED_REV,
        filename="checkpoints/style_vangogh_pretrained/latest_net_G.pth",
        source="HUB_CHECKPOINTS.md; Space davidpiscasio/unpaired-img2img",
    ),
    "style-cezanne": _cyclegan(
        "style-cezanne", "Photo → Cézanne", "Official CycleGAN photo→Cézanne generator (junyanz).",
        repo=_YANGUAN_SPACE, rev=_YANGUAN_REV, filename="weights/detect/style_cezanne.pth",
        source="HUB_CHECKPOINTS.md; Space Yanguan/CycleGAN",
    ),
    "style-ukiyoe": _cyclegan(
        "style-ukiyoe", "Photo → Ukiyo-e", "Official CycleGAN photo→Ukiyo-e generator (junyanz).",
        repo=_YANGUAN_SPACE, rev=_YANGUAN_REV, filename="weights/detect/style_ukiyoe.pth",
        source="HUB_CHECKPOINTS.md; Space Yanguan/CycleGAN",
    ),
    "horse2zebra": _cyclegan(
        "horse2zebra", "Horse → Zebra", "Official CycleGAN horse→zebra generator (junyanz).",
        repo=_UNPAIRED_SPACE, rev=_UNPAIRED_REV,
        filename="checkpoints/horse2zebra_pretrained/latest_net_G.pth",
        source="HUB_CHECKPOINTS.md; Space davidpiscasio/unpaired-img2img",
    ),
    "zebra2horse": _cyclegan(
        "zebra2horse", "Zebra → Horse", "Official CycleGAN zebra→horse generator (junyanz).",
        repo=_UNPAIRED_SPACE, rev=_UNPAIRED_REV,
        filename="checkpoints/zebra2horse_pretrained/latest_net_G.pth",
        source="HUB_CHECKPOINTS.md; Space davidpiscasio/unpaired-img2img",
    ),
    "horse2zebra-tmabraham": _cyclegan(
        "horse2zebra-tmabraham", "Horse → Zebra (tmabraham)",
        "CycleGAN horse→zebra trained by tmabraham; the file holds G_A, G_B, D_A, D_B: G_B is horse→zebra.",
        repo="tmabraham/horse2zebra_cyclegan", rev="main", filename="pytorch_model.bin", repo_type="model",
        key_prefix="G_B.", licence="unspecified by the publisher",
        source="HUB_CHECKPOINTS.md; model tmabraham/horse2zebra_cyclegan",
    ),
    "default-style": ModelSpec(
        id="default-style",
        title="Photo → Painting (bundled)",
        task="style",
        arch="resnet_generator",
        arch_kwargs={"in_channels": 3, "out_channels": 3, "ngf": 32, "n_blocks": 6},
        value_range=(-1.0, 1.0),
        size_multiple=4,
        tile=None,
        licence="MIT (weights trained by this project on public-domain paintings and benchmark photos)",
        bundled=WEIGHTS_DIR / "default-style.safetensors",
        description="Compact CycleGAN trained by this project with train.py; works offline.",
        source="weights/MANIFEST.json",
    ),
    "default-style-reverse": ModelSpec(
        id="default-style-reverse",
        title="Painting → Photo (bundled)",
        task="style",
        arch="resnet_generator",
        arch_kwargs={"in_channels": 3, "out_channels": 3, "ngf": 32, "n_blocks": 6},
        value_range=(-1.0, 1.0),
        size_multiple=4,
        tile=None,
        licence="MIT (weights trained by this project on public-domain paintings and benchmark photos)",
        bundled=WEIGHTS_DIR / "default-style-reverse.safetensors",
        description="The reverse generator of the same CycleGAN run as default-style (painting → photo).",
        source="weights/MANIFEST.json",
    ),
    # --- Sketch to photo (Pix2Pix) ------------------------------------------------------------------------------
    "edges2shoes": ModelSpec(
        id="edges2shoes",
        title="Edges → Shoes",
        task="sketch2photo",
        arch="huggan_unet",
        arch_kwargs={"in_channels": 3, "out_channels": 3},
        repo_id="huggan/pix2pix-edge2shoes",
        filename="pytorch_model.bin",
        revision="main",  # not pinned: no sha could be looked up offline
        value_range=(-1.0, 1.0),
        size_multiple=256,
        input_size=256,
        licence="MIT",
        fallback="default-sketch",
        description="Pix2Pix edges→shoes (huggan community event, 100 epochs; used by the huggan/Sketch2Shoes Space).",
        source="HUB_CHECKPOINTS.md; model huggan/pix2pix-edge2shoes",
    ),
    "facades": ModelSpec(
        id="facades",
        title="Labels → Facade",
        task="sketch2photo",
        arch="huggan_unet",
        arch_kwargs={"in_channels": 3, "out_channels": 3},
        repo_id="huggan/pix2pix-facades-demo",
        filename="pytorch_model.bin",
        revision="main",  # not pinned: no sha could be looked up offline
        value_range=(-1.0, 1.0),
        size_multiple=256,
        input_size=256,
        licence="MIT",
        fallback="default-sketch",
        description="Pix2Pix facade label map→photo (huggan demo, 5 epochs: weak, kept for the classic task).",
        source="HUB_CHECKPOINTS.md; model huggan/pix2pix-facades-demo",
    ),
    "default-sketch": ModelSpec(
        id="default-sketch",
        title="Edges → Photo (bundled)",
        task="sketch2photo",
        arch="unet_generator",
        arch_kwargs={"in_channels": 3, "out_channels": 3, "num_downs": 8, "ngf": 32, "norm": "instance"},
        value_range=(-1.0, 1.0),
        size_multiple=256,
        input_size=256,
        licence="MIT (weights trained by this project on benchmark photos)",
        bundled=WEIGHTS_DIR / "default-sketch.safetensors",
        description="Compact Pix2Pix trained by this project on edges_from_photo maps of scene photos; works offline.",
        source="weights/MANIFEST.json",
    ),
    # --- Upscaling (SRGAN family) -------------------------------------------------------------------------------
    "realesrgan-x4": ModelSpec(
        id="realesrgan-x4",
        title="Real-ESRGAN x4 (ai-forever)",
        task="upscale",
        arch="rrdbnet",
        arch_kwargs={"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4},
        repo_id="ai-forever/Real-ESRGAN",
        filename="RealESRGAN_x4.pth",
        revision="main",  # not pinned: no sha could be looked up offline
        value_range=(0.0, 1.0),
        scale=4,
        size_multiple=1,
        tile=192,
        tile_overlap=16,
        licence="BSD-3-Clause",
        fallback="default-upscale-x4",
        description="ESRGAN-class RRDBNet x4 for real-world photos (used by many Spaces).",
        source="HUB_CHECKPOINTS.md; model ai-forever/Real-ESRGAN",
    ),
    "realesrgan-x4plus": ModelSpec(
        id="realesrgan-x4plus",
        title="Real-ESRGAN x4plus (official)",
        task="upscale",
        arch="rrdbnet",
        arch_kwargs={"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4},
        repo_id="LykosAI/Upscalers",
        filename="RealESRGAN/RealESRGAN_x4plus.pth",
        revision="main",  # not pinned: no sha could be looked up offline
        value_range=(0.0, 1.0),
        scale=4,
        size_multiple=1,
        tile=192,
        tile_overlap=16,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        fallback="default-upscale-x4",
        description="Official RealESRGAN_x4plus (params_ema), mirrored by LykosAI/Upscalers.",
        source="HUB_CHECKPOINTS.md; model LykosAI/Upscalers",
    ),
    "srgan-x4": ModelSpec(
        id="srgan-x4",
        title="SRGAN x4 (ImageNet)",
        task="upscale",
        arch="srresnet",
        arch_kwargs={"in_channels": 3, "out_channels": 3, "channels": 64, "num_rcb": 16, "upscale": 4},
        repo_id="goodfellowliu/SRGAN-PyTorch",
        filename="SRGAN_x4-SRGAN_ImageNet.pth.tar",
        revision="main",  # not pinned: no sha could be looked up offline
        value_range=(0.0, 1.0),
        scale=4,
        size_multiple=1,
        tile=256,
        tile_overlap=16,
        licence="Apache-2.0",
        fallback="default-upscale-x4",
        description="The SRGAN paper's SRResNet generator, adversarially trained on ImageNet.",
        source="HUB_CHECKPOINTS.md; model goodfellowliu/SRGAN-PyTorch",
    ),
    "default-upscale-x4": ModelSpec(
        id="default-upscale-x4",
        title="Compact x4 (bundled)",
        task="upscale",
        arch="srvgg_compact",
        arch_kwargs={
            "num_in_ch": 3, "num_out_ch": 3, "num_feat": 48, "num_conv": 16, "upscale": 4, "act_type": "prelu",
        },
        value_range=(0.0, 1.0),
        scale=4,
        size_multiple=1,
        tile=256,
        tile_overlap=16,
        licence="MIT (weights trained by this project on benchmark photos)",
        bundled=WEIGHTS_DIR / "default-upscale-x4.safetensors",
        description="Compact SRVGG-style x4 upscaler trained by this project with train.py; works offline.",
        source="weights/MANIFEST.json",
    ),
}


def get_spec(
    model_id: str, *, max_weights_mb: int = Settings.max_weights_mb, custom_models: bool = Settings.custom_models
) -> ModelSpec:
    """The spec called `model_id`, or a local spec when `model_id` is a model folder (config.json +
    model.safetensors), its config.json, or a train.py run folder (then its final/), or a custom model (a Hub
    repo or file, a local weights file: `custom.resolve_custom`, with the Settings fields of the same names).

    Raises:
        UnknownModelError: not an offered id, a model folder nor a custom id; the message lists the valid ids.
        UnsupportedModelError, WeightsUnavailableError, WeightsError: a custom id that cannot be used (see
            `custom.resolve_custom`).
    """
    if model_id in SPECS:
        return SPECS[model_id]
    path = Path(model_id)
    if path.is_dir() and not (path / "config.json").exists() and (path / "final" / "config.json").is_file():
        path = path / "final"  # a train.py run folder: its generator
    if (path / "config.json").is_file() or path.name == "config.json":
        return spec_from_config(path)
    from .custom import resolve_custom  # imported here: custom.py builds on this module

    return resolve_custom(model_id, max_weights_mb=max_weights_mb, enabled=custom_models)


def specs_for_task(task: Task) -> list[ModelSpec]:
    return [spec for spec in SPECS.values() if spec.task == task]


def spec_from_config(path: str | Path) -> ModelSpec:
    """A local spec from a `train.py` output: a folder holding config.json + model.safetensors (or the json itself).

    Raises:
        GanModelsError: missing files or a config that is not a gan_models/1 spec; names the file.
    """
    path = Path(path)
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise GanModelsError(f"{config_path}: no config.json (expected a train.py output folder)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GanModelsError(f"{config_path}: unreadable config ({exc})") from exc
    if config.get("format") != "gan_models/1":
        raise GanModelsError(f"{config_path}: not a gan_models model config (format {config.get('format')!r})")
    weights = config_path.parent / "model.safetensors"
    if not weights.is_file():
        raise GanModelsError(f"{config_path.parent}: model.safetensors is missing")
    known = {f.name for f in fields(ModelSpec)} - {"bundled", "repo_id", "filename", "revision", "repo_type"}
    kwargs = {k: v for k, v in config.items() if k in known}
    if "value_range" in kwargs:
        kwargs["value_range"] = tuple(float(v) for v in kwargs["value_range"])
    kwargs.setdefault("id", config_path.parent.name)
    kwargs.setdefault("title", kwargs["id"])
    try:
        return ModelSpec(**kwargs, bundled=weights)
    except TypeError as exc:
        raise GanModelsError(f"{config_path}: incomplete spec ({exc})") from exc

"""Every model the studio offers, written out by hand: what it is, where its weights live, what input it needs.

A ModelSpec is the only place that knows a model's numbers (value range, scale, size multiple, tiling advice).
SPECS is a literal dict; `spec_from_config` turns a `train.py` output folder into a local spec.

Revisions: every Hub download goes through `revision=`, so pinning a model is a one-line change here. The commit
shas could not be looked up while writing this file (the build machines reach no Hub and no model page; the public
code search holds no commit history for these repos), so every Hub file reads "main" (`_UNPINNED`). Pin a sha from the
repo's "Files and versions" history before deploying where reproducibility matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .modelspec import TASKS, WEIGHTS_DIR, HubFile, ModelSpec, Task, spec_from_config
from .resolve import resolve_custom
from .settings import Settings

# Official junyanz CycleGAN generators are served from http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/
# (scripts/download_cyclegan_model.sh), not from the Hub; the specs point at Hub Spaces that mirror those files.
_CYCLEGAN_9 = {"in_channels": 3, "out_channels": 3, "ngf": 64, "n_blocks": 9}
_CYCLEGAN_CODE = "https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix"
_UNPAIRED_SPACE = "davidpiscasio/unpaired-img2img"
_YANGUAN_SPACE = "Yanguan/CycleGAN"
_RRDB_X4 = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4}
_HUB = "https://huggingface.co/"
_UNPINNED = "main"  # not pinned: no sha could be looked up offline (see module docstring)


def _hub(repo: str, filename: str, *, repo_type: str = "model") -> HubFile:
    return HubFile(repo_id=repo, filename=filename, revision=_UNPINNED, repo_type=repo_type)


def _space(repo: str, filename: str) -> HubFile:
    return _hub(repo, filename, repo_type="space")


def _page(hub: HubFile) -> str:
    """The public page of a Hub file's repository."""
    return _HUB + ("spaces/" if hub.repo_type == "space" else "") + hub.repo_id


def _cyclegan(id: str, title: str, description: str, *, sources: tuple[HubFile, ...], **extra: Any) -> ModelSpec:
    return ModelSpec(
        id=id,
        title=title,
        task="style",
        arch="resnet_generator",
        arch_kwargs=_CYCLEGAN_9,
        sources=sources,
        value_range=(-1.0, 1.0),
        size_multiple=4,
        tile=None,
        licence=extra.pop("licence", "BSD-2-Clause (junyanz/pytorch-CycleGAN-and-pix2pix)"),
        fallback="default-style",
        description=description,
        source=extra.pop("source", f"{_page(sources[0])}; {_CYCLEGAN_CODE}"),
        **extra,
    )


def _pix2pix(id: str, title: str, description: str, *, sources: tuple[HubFile, ...], **extra: Any) -> ModelSpec:
    """A huggan community Pix2Pix generator (256x256 training canvas, MIT)."""
    return ModelSpec(
        id=id,
        title=title,
        task="sketch2photo",
        arch="huggan_unet",
        arch_kwargs={"in_channels": 3, "out_channels": 3},
        sources=sources,
        value_range=(-1.0, 1.0),
        size_multiple=256,
        input_size=256,
        licence="MIT",
        fallback="default-sketch",
        description=description,
        source=_page(sources[0]),
        **extra,
    )


def _upscaler(
    id: str, title: str, description: str, *, arch: str, arch_kwargs: Mapping[str, Any], sources: tuple[HubFile, ...],
    tile: int, licence: str, source: str,
) -> ModelSpec:
    """An x4 upscaler on the Hub, RGB in [0, 1], falling back to the bundled compact model."""
    return ModelSpec(
        id=id,
        title=title,
        task="upscale",
        arch=arch,
        arch_kwargs=arch_kwargs,
        sources=sources,
        value_range=(0.0, 1.0),
        scale=4,
        size_multiple=1,
        tile=tile,
        tile_overlap=16,
        licence=licence,
        fallback="default-upscale-x4",
        description=description,
        source=source,
    )


def _bundled(id: str, title: str, description: str, *, task: Task, arch: str, arch_kwargs: Mapping[str, Any],
             licence: str, **extra: Any) -> ModelSpec:
    """A generator trained by this project, shipped in weights/<id>.safetensors and described in its manifest."""
    return ModelSpec(id=id, title=title, task=task, arch=arch, arch_kwargs=arch_kwargs, licence=licence,
                     bundled=WEIGHTS_DIR / f"{id}.safetensors", description=description,
                     source="weights/MANIFEST.json", **extra)


_SMALL_CYCLEGAN = {"in_channels": 3, "out_channels": 3, "ngf": 32, "n_blocks": 6}
_PROJECT_PHOTOS = "MIT (weights trained by this project on benchmark photos)"
_PROJECT_PAINTINGS = "MIT (weights trained by this project on public-domain paintings and benchmark photos)"

SPECS: dict[str, ModelSpec] = {
    # --- Style transfer (CycleGAN) -----------------------------------------------------------------------------
    "style-monet": _cyclegan(
        "style-monet", "Photo → Monet", "Official CycleGAN photo→Monet generator (junyanz).",
        sources=(_space(_UNPAIRED_SPACE, "checkpoints/style_monet_pretrained/latest_net_G.pth"),),
    ),
    "style-vangogh": _cyclegan(
        "style-vangogh", "Photo → Van Gogh", "Official CycleGAN photo→Van Gogh generator (junyanz).",
        sources=(_space(_UNPAIRED_SPACE, "checkpoints/style_vangogh_pretrained/latest_net_G.pth"),),
    ),
    "style-cezanne": _cyclegan(
        "style-cezanne", "Photo → Cézanne", "Official CycleGAN photo→Cézanne generator (junyanz).",
        sources=(_space(_YANGUAN_SPACE, "weights/detect/style_cezanne.pth"),),
    ),
    "style-ukiyoe": _cyclegan(
        "style-ukiyoe", "Photo → Ukiyo-e", "Official CycleGAN photo→Ukiyo-e generator (junyanz).",
        sources=(_space(_YANGUAN_SPACE, "weights/detect/style_ukiyoe.pth"),),
    ),
    "horse2zebra": _cyclegan(
        "horse2zebra", "Horse → Zebra", "Official CycleGAN horse→zebra generator (junyanz).",
        sources=(_space(_UNPAIRED_SPACE, "checkpoints/horse2zebra_pretrained/latest_net_G.pth"),),
    ),
    "zebra2horse": _cyclegan(
        "zebra2horse", "Zebra → Horse", "Official CycleGAN zebra→horse generator (junyanz).",
        sources=(_space(_UNPAIRED_SPACE, "checkpoints/zebra2horse_pretrained/latest_net_G.pth"),),
    ),
    "horse2zebra-tmabraham": _cyclegan(
        "horse2zebra-tmabraham", "Horse → Zebra (tmabraham)",
        "CycleGAN horse→zebra trained by tmabraham; the file holds G_A, G_B, D_A, D_B: G_B is horse→zebra.",
        sources=(_hub("tmabraham/horse2zebra_cyclegan", "pytorch_model.bin"),),
        key_prefix="G_B.", licence="unspecified by the publisher",
        # UPIT's CycleGAN docstring: "G_B takes real input A and generates fake input B"
        source=f"{_HUB}tmabraham/horse2zebra_cyclegan; https://github.com/tmabraham/UPIT",
    ),
    "default-style": _bundled(
        "default-style", "Photo → Painting (bundled)",
        "Compact CycleGAN trained by this project with train.py; works offline.",
        task="style", arch="resnet_generator", arch_kwargs=_SMALL_CYCLEGAN, licence=_PROJECT_PAINTINGS,
    ),
    "default-style-reverse": _bundled(
        "default-style-reverse", "Painting → Photo (bundled)",
        "The reverse generator of the same CycleGAN run as default-style (painting → photo).",
        task="style", arch="resnet_generator", arch_kwargs=_SMALL_CYCLEGAN, licence=_PROJECT_PAINTINGS,
    ),
    # --- Sketch to photo (Pix2Pix) ------------------------------------------------------------------------------
    "edges2shoes": _pix2pix(
        "edges2shoes", "Edges → Shoes",
        "Pix2Pix edges→shoes (huggan community event, 100 epochs; used by the huggan/Sketch2Shoes Space).",
        sources=(_hub("huggan/pix2pix-edge2shoes", "pytorch_model.bin"),),
    ),
    "facades": _pix2pix(
        "facades", "Labels → Facade",
        "Pix2Pix facade label map→photo (huggan demo, 5 epochs: weak, kept for the classic task).",
        sources=(_hub("huggan/pix2pix-facades-demo", "pytorch_model.bin"),),
    ),
    "default-sketch": _bundled(
        "default-sketch", "Edges → Photo (bundled)",
        "Compact Pix2Pix trained by this project on edges_from_photo maps of scene photos; works offline.",
        task="sketch2photo", arch="unet_generator",
        arch_kwargs={"in_channels": 3, "out_channels": 3, "num_downs": 8, "ngf": 32, "norm": "instance"},
        licence=_PROJECT_PHOTOS, size_multiple=256, input_size=256,
    ),
    # --- Upscaling (SRGAN family) -------------------------------------------------------------------------------
    "realesrgan-x4": _upscaler(
        "realesrgan-x4", "Real-ESRGAN x4 (ai-forever)", "ESRGAN-class RRDBNet x4 for real-world photos (used by many "
        "Spaces).",
        arch="rrdbnet", arch_kwargs=_RRDB_X4, sources=(_hub("ai-forever/Real-ESRGAN", "RealESRGAN_x4.pth"),),
        tile=192, licence="BSD-3-Clause",
        source=f"{_HUB}ai-forever/Real-ESRGAN; https://github.com/ai-forever/Real-ESRGAN",
    ),
    "realesrgan-x4plus": _upscaler(
        "realesrgan-x4plus", "Real-ESRGAN x4plus (official)",
        "Official RealESRGAN_x4plus (params_ema), mirrored by LykosAI/Upscalers.",
        arch="rrdbnet", arch_kwargs=_RRDB_X4, sources=(_hub("LykosAI/Upscalers", "RealESRGAN/RealESRGAN_x4plus.pth"),),
        tile=192, licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        source=f"{_HUB}LykosAI/Upscalers; https://github.com/xinntao/Real-ESRGAN",
    ),
    "srgan-x4": _upscaler(
        "srgan-x4", "SRGAN x4 (ImageNet)", "The SRGAN paper's SRResNet generator, adversarially trained on ImageNet.",
        arch="srresnet", arch_kwargs={"in_channels": 3, "out_channels": 3, "channels": 64, "num_rcb": 16, "upscale": 4},
        # The publisher's current code downloads the first; the second is its 2023-24 location. Both are training
        # checkpoints (state_dict with _orig_mod. keys, ema_state_dict, optimizer, epoch): the loader takes state_dict.
        sources=(_hub("ChangyuLiu/SRGAN-PyTorch", "SRGAN_x4-ImageNet.pth.tar"),
                 _hub("goodfellowliu/SRGAN-PyTorch", "SRGAN_x4-SRGAN_ImageNet.pth.tar")),
        tile=256, licence="Apache-2.0",
        source=f"{_HUB}ChangyuLiu/SRGAN-PyTorch; https://github.com/Lornatang/SRGAN-PyTorch",
    ),
    "default-upscale-x4": _bundled(
        "default-upscale-x4", "Compact x4 (bundled)",
        "Compact SRVGG-style x4 upscaler trained by this project with train.py; works offline.",
        task="upscale", arch="srvgg_compact",
        arch_kwargs={
            "num_in_ch": 3, "num_out_ch": 3, "num_feat": 48, "num_conv": 16, "upscale": 4, "act_type": "prelu",
        },
        licence=_PROJECT_PHOTOS, value_range=(0.0, 1.0), scale=4, size_multiple=1, tile=256, tile_overlap=16,
    ),
}


def get_spec(
    model_id: str, *, max_weights_mb: int = Settings.max_weights_mb, custom_models: bool = Settings.custom_models,
    url_hosts: Sequence[str] = Settings.url_hosts,
) -> ModelSpec:
    """The spec called `model_id`, or a local spec when `model_id` is a model folder (config.json +
    model.safetensors), its config.json, or a train.py run folder (then its final/), or a custom model (a Hub
    repo or file, a local weights file: `resolve.resolve_custom`, with the Settings fields of the same names).

    Raises:
        UnknownModelError: not an offered id, a model folder nor a custom id; the message lists the valid ids.
        UnsupportedModelError, WeightsUnavailableError, WeightsError: a custom id that cannot be used (see
            `resolve.resolve_custom`).
    """
    if model_id in SPECS:
        return SPECS[model_id]
    path = Path(model_id)
    if path.is_dir() and not (path / "config.json").exists() and (path / "final" / "config.json").is_file():
        path = path / "final"  # a train.py run folder: its generator
    if (path / "config.json").is_file() or path.name == "config.json":
        return spec_from_config(path)
    return resolve_custom(model_id, max_weights_mb=max_weights_mb, enabled=custom_models, known=SPECS,
                          url_hosts=url_hosts)


def specs_for_task(task: Task) -> list[ModelSpec]:
    return [spec for spec in SPECS.values() if spec.task == task]


__all__ = ["SPECS", "TASKS", "WEIGHTS_DIR", "HubFile", "ModelSpec", "Task", "get_spec", "spec_from_config",
           "specs_for_task"]

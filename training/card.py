"""final/README.md, the Hub model card of a trained generator, and the upload of final/ to the Hub.

The card follows https://huggingface.co/docs/hub/model-cards: YAML metadata between `---` lines (rendered with
yaml.safe_dump, so any path or id is quoted correctly), then Markdown. final/ is uploaded as a whole, so every push
replaces the card on the Hub with the one the run just wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from gan_models.errors import first_line
from gan_models.settings import hub_offline
from gan_models.specs import ModelSpec

if TYPE_CHECKING:
    from .config import TrainConfig
    from .mode import GanMode

# Hub license identifiers (https://huggingface.co/docs/hub/repositories-licenses) that our specs' licences name.
HUB_LICENSES = frozenset({"mit", "apache-2.0", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0",
                          "cc-by-sa-4.0", "cc-by-nc-4.0", "gpl-3.0", "agpl-3.0", "openrail"})


def hub_license(licence: str) -> str:
    """A spec's free-text licence as a Hub license id: "MIT (weights trained by ...)" → "mit".

    "" means weights this project trained from scratch (MIT, like the repository); a licence the publisher did not
    state is "unknown"; any other text is "other" (the card's text quotes it).
    """
    if not licence.strip():
        return "mit"
    first = licence.split()[0].strip("(),;").lower()
    if first in HUB_LICENSES:
        return first
    return "unknown" if licence.lower().startswith("unspecified") else "other"


def base_model(init_spec: ModelSpec | None) -> str | None:
    """The Hub model repo the weights started from (--init), for the card's `base_model`; None when they did not
    come from a Hub model repo (a bundled default, a local folder, a Space's file)."""
    if init_spec is None or init_spec.repo_id is None or init_spec.repo_type != "model":
        return None
    return init_spec.repo_id


def model_card(*, mode: type[GanMode], cfg: TrainConfig, spec: ModelSpec, model_id: str, steps: int, n_images: int,
               val_note: str, metrics: dict[str, float], init_spec: ModelSpec | None, folder: Path,
               sample: str) -> str:
    """The text of final/README.md.

    Parameters:
        mode: the training mode's class (tags, summary, what its validation scores mean).
        cfg: the run's options (data, batch, crop, --init, --push-to-hub).
        spec: the trained generator's spec; model_id: the id written into final/config.json.
        steps: optimisation steps done; n_images: training images; val_note: where validation images came from.
        metrics: the last validation scores the run logged.
        init_spec: the spec whose weights the run started from (--init), if any.
        folder: the final/ folder the card goes into; sample: the sample image's file name in it.
    """
    licence = init_spec.licence if init_spec is not None else ""
    meta: dict[str, object] = {
        "license": hub_license(licence),
        "pipeline_tag": "image-to-image",
        "library_name": "gan-studio",
        "tags": ["gan", *mode.card_tags, "image-to-image"],
    }
    if (base := base_model(init_spec)) is not None:
        meta["base_model"] = base
    ref = cfg.push_to_hub or str(folder)
    local = str(folder) if not cfg.push_to_hub else model_id
    start = (f"fine-tuned from `{cfg.init}`" + (f" ([{base}](https://huggingface.co/{base}))" if base else "")
             if init_spec is not None else "trained from scratch")
    scale = f" It enlarges images {spec.scale}x." if spec.scale != 1 else ""
    rows = "\n".join(f"| `{k}` | {v:.4g} | {mode.metric_notes.get(k, '')} |" for k, v in metrics.items())
    download = (f"huggingface-cli download {cfg.push_to_hub} --local-dir {model_id}   # the app loads local "
                f"folders\n" if cfg.push_to_hub else "")
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip("\n"),
        "---",
        "",
        f"# {model_id}",
        "",
        f"{mode.card_summary[0].upper()}{mode.card_summary[1:]}, {start} with the `train.py` of GAN image studio "
        f"(mode `{mode.name}`).{scale} Architecture: `{spec.arch}` with `{dict(spec.arch_kwargs)}`; pixel values "
        f"in {list(spec.value_range)}.",
        "",
        "## Training",
        "",
        f"- Data: `{cfg.data}`, {n_images} training images; validation on {val_note}.",
        f"- Steps: {steps} (batch {cfg.batch_size}, {cfg.crop} px crops, learning rate {cfg.lr:g}, "
        f"`{cfg.gan_loss}` GAN loss, seed {cfg.seed}).",
        f"- Licence of the weights: {licence or 'MIT (trained from scratch by this run)'}.",
        "",
        "## Validation",
        "",
        f"After step {steps}:",
        "",
        "| metric | value | meaning |",
        "|---|---|---|",
        rows,
        "",
        f"![input | output | {'reconstruction' if mode.name == 'cyclegan' else 'target'}]({sample})",
        "",
        f"Validation images, one per row: input | output | "
        f"{'reconstruction G_B(G(input))' if mode.name == 'cyclegan' else 'target'}.",
        "",
        "## Use it with GAN image studio",
        "",
        "```bash",
        f"python -m gan_models run {ref} in.png -o out/",
        f"{download}python app.py --weights {local}",
        "```",
        "",
        "```python",
        "from PIL import Image",
        "",
        "import gan_models",
        "",
        f'translate = gan_models.translator_for("{ref}")',
        'translate(Image.open("in.png")).save("out.png")',
        "```",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(folder: Path, repo: str) -> None:
    """Upload final/ (model.safetensors, config.json, README.md, sample.png) to a Hub model repo.

    A failed or impossible upload never fails the run (the model is on disk); the message says how to upload later.
    """
    from huggingface_hub import HfApi, get_token

    if hub_offline() or get_token() is None:
        print(f"not pushed to {repo}: offline (HF_HUB_OFFLINE) or no Hugging Face token; upload later with "
              f"`huggingface-cli upload {repo} {folder} .`", file=sys.stderr)
        return
    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder))
        print(f"pushed {folder} to https://huggingface.co/{repo}")
    except Exception as exc:  # noqa: BLE001 - a failed upload must not fail the run: the model is on disk
        print(f"not pushed to {repo}: {type(exc).__name__}: {first_line(exc)}; the model is in {folder}",
              file=sys.stderr)

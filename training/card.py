"""final/README.md, the Hub model card of a trained generator, and the upload of final/ to the Hub.

The card follows https://huggingface.co/docs/hub/model-cards: YAML metadata between `---` lines (rendered with
yaml.safe_dump, so any path or id is quoted correctly; the validation scores as `model-index`, the licence with
`license_name` and `license_link` when it is "other"), then Markdown. Nothing pushed names a path of this machine:
the data folder appears by its name only (`public_name`, also in config.json). final/ is uploaded as a whole, so
every push replaces the card on the Hub with the one the run just wrote; a mode's other generators (CycleGAN's
final_reverse/) go into subfolders of the same repo (`GanMode.published_folders`), each loadable by id as
OWNER/NAME/SUBFOLDER/model.safetensors.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict
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


def public_name(path: str | None) -> str | None:
    """What a card or config.json may say about a local path: its last part (a data folder's name), never where it
    is on this machine; a Hub id (owner/name, not an existing path) is kept as it is."""
    if path is None:
        return None
    local = Path(path).expanduser()
    if local.exists() or local.is_absolute() or path.startswith(("./", "../", "~")):
        return local.resolve().name or str(path)
    return path


def public_config(cfg: TrainConfig) -> dict[str, object]:
    """The run's options for config.json: the local paths (data, validation data, output, a local --init) by name."""
    config = asdict(cfg)
    for key in ("data", "val_data", "out", "init"):
        config[key] = public_name(config[key])
    return config


def licence_metadata(licence: str, init_spec: ModelSpec | None) -> dict[str, str]:
    """`license`, plus `license_name` and `license_link` for "other" (the Hub asks for both): a slug of the
    publisher's licence text and the page stating it (the base model's Hub page, else the spec's first https
    source); "other" without such a page is "unknown"."""
    licence_id = hub_license(licence)
    if licence_id != "other":
        return {"license": licence_id}
    links = [f"https://huggingface.co/{base}"] if (base := base_model(init_spec)) else []
    links += re.findall(r"https://[^\s;,)]+", init_spec.source if init_spec is not None else "")
    if not links:
        return {"license": "unknown"}
    name = re.sub(r"[^a-z0-9]+", "-", licence.lower()).strip("-")[:64]
    return {"license": "other", "license_name": name, "license_link": links[0]}


def model_index(model_id: str, mode: type[GanMode], dataset: str, metrics: dict[str, float]) -> list[dict]:
    """The validation scores as the Hub's `model-index` (one result: the task, the validation split of the run's
    data, one metric per score)."""
    return [{"name": model_id, "results": [{
        "task": {"type": "image-to-image", "name": mode.card_summary.split(" that ")[0]},
        "dataset": {"type": dataset, "name": dataset, "split": "validation"},
        "metrics": [{"type": key.removeprefix("val_"), "value": round(float(value), 6), "name": key}
                    for key, value in metrics.items()],
    }]}]


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
    dataset = public_name(cfg.data) or "unknown"
    meta: dict[str, object] = {
        **licence_metadata(licence, init_spec),
        "pipeline_tag": "image-to-image",
        "library_name": "gan-studio",
        "tags": ["gan", *mode.card_tags, "image-to-image"],
    }
    if (base := base_model(init_spec)) is not None:
        meta["base_model"] = base
    if metrics:
        meta["model-index"] = model_index(model_id, mode, dataset, metrics)
    run = f"{folder.parent.name}/{folder.name}"  # the run folder's name, not where it is on this machine
    ref = cfg.push_to_hub or run
    local = run if not cfg.push_to_hub else model_id
    start = (f"fine-tuned from `{cfg.init}`" + (f" ([{base}](https://huggingface.co/{base}))" if base else "")
             if init_spec is not None else "trained from scratch")
    scale = f" It enlarges images {spec.scale}x." if spec.scale != 1 else ""
    rows = "\n".join(f"| `{k}` | {v:.4g} | {mode.metric_notes.get(k, '')} |" for k, v in metrics.items())
    download = (f"hf download {cfg.push_to_hub} --local-dir {model_id}   # the app loads local folders\n"
                if cfg.push_to_hub else "")
    # the mode's other generators: subfolders of the pushed repo, or folders beside final/
    others = [f"- `{cfg.push_to_hub}/{sub}/model.safetensors`: {what}" if cfg.push_to_hub
              else f"- `{folder.parent.name}/{local}`: {what}" for sub, (local, what) in mode.published_folders.items()]
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
        f"- Data: `{dataset}`, {n_images} training images; validation on {val_note}.",
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
    if others:
        where = "repository" if cfg.push_to_hub else "run"
        lines += [f"Also in this {where}, loadable by its id the same ways:", "", *others, ""]
    return "\n".join(lines)


def push_to_hub(folder: Path, repo: str, extra: dict[str, Path] | None = None) -> None:
    """Upload final/ (model.safetensors, config.json, README.md, sample.png) to a Hub model repo, and each folder of
    `extra` ({subfolder in the repo: local folder}, e.g. CycleGAN's final_reverse/ as reverse/) into it.

    A failed or impossible upload never fails the run (the model is on disk); the message says how to upload later.
    """
    from huggingface_hub import HfApi, get_token

    uploads = [(folder, "."), *((path, sub) for sub, path in (extra or {}).items())]
    if hub_offline() or get_token() is None:
        later = " and ".join(f"`hf upload {repo} {path} {sub}`" for path, sub in uploads)
        print(f"not pushed to {repo}: offline (HF_HUB_OFFLINE) or no Hugging Face token; upload later with "
              f"{later}", file=sys.stderr)
        return
    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder))
        for path, sub in uploads[1:]:
            api.upload_folder(repo_id=repo, folder_path=str(path), path_in_repo=sub)
        print(f"pushed {folder} to https://huggingface.co/{repo}"
              + "".join(f" ({path} as {repo}/{sub})" for path, sub in uploads[1:]))
    except Exception as exc:  # noqa: BLE001 - a failed upload must not fail the run: the model is on disk
        print(f"not pushed to {repo}: {type(exc).__name__}: {first_line(exc)}; the model is in {folder}",
              file=sys.stderr)

"""What a model is: `ModelSpec` (plain, frozen, picklable data) and `HubFile`, and `spec_from_config` for a
`train.py` output folder. The curated models are in `specs.SPECS`; custom ids become specs in `resolve`.

Below detection and resolution (which build specs) and below `specs` (which lists them); imports only errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .errors import GanModelsError, NotAModelConfigError

Task = Literal["style", "sketch2photo", "upscale"]
TASKS: tuple[Task, ...] = ("style", "sketch2photo", "upscale")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class HubFile:
    """One file on the Hugging Face Hub.

    Parameters:
        repo_id: "owner/name".
        filename: path of the file inside the repository.
        revision: a commit sha (pinned) or a branch name.
        repo_type: "model" or "space".
    """

    repo_id: str
    filename: str
    revision: str | None = None
    repo_type: str = "model"

    def __str__(self) -> str:
        return f"{self.repo_type} {self.repo_id}/{self.filename}@{(self.revision or 'main')[:12]}"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of the code needs to know about one model.

    Parameters:
        id: stable identifier used by the CLI, the app and the API.
        title: short human name for menus.
        task: "style" (CycleGAN), "sketch2photo" (Pix2Pix) or "upscale" (SRGAN family).
        arch, arch_kwargs: key in `archs.ARCHS` and its constructor arguments.
        sources: the Hub files that hold the weights, tried in order (a publisher that moved its files keeps the
            old location as a second source); `repo_id`, `filename`, `revision`, `repo_type` read the first.
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
    sources: tuple[HubFile, ...] = ()
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
        object.__setattr__(self, "sources", tuple(self.sources))

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple:
        # The read-only arch_kwargs view cannot be pickled; a worker process or a Ray actor rebuilds the spec.
        return (_spec_from_fields, ({f.name: getattr(self, f.name) for f in fields(self)} | {
            "arch_kwargs": dict(self.arch_kwargs)},))

    @property
    def is_bundled(self) -> bool:
        return self.bundled is not None and not self.sources

    @property
    def repo_id(self) -> str | None:
        return self.sources[0].repo_id if self.sources else None

    @property
    def filename(self) -> str | None:
        return self.sources[0].filename if self.sources else None

    @property
    def revision(self) -> str | None:
        return self.sources[0].revision if self.sources else None

    @property
    def repo_type(self) -> str:
        return self.sources[0].repo_type if self.sources else "model"


def _spec_from_fields(values: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**values)


def spec_from_config(path: str | Path) -> ModelSpec:
    """A local spec from a `train.py` output: a folder holding config.json + model.safetensors (or the json itself).

    Raises:
        GanModelsError: missing files or an incomplete config; names the file.
        NotAModelConfigError: a config.json that is not a gan_models/1 spec (another library's).
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
        raise NotAModelConfigError(f"{config_path}: not a gan_models model config (format {config.get('format')!r})")
    weights = config_path.parent / "model.safetensors"
    if not weights.is_file():
        raise GanModelsError(f"{config_path.parent}: model.safetensors is missing")
    known = {f.name for f in fields(ModelSpec)} - {"bundled", "sources"}
    kwargs = {k: v for k, v in config.items() if k in known}
    if "value_range" in kwargs:
        kwargs["value_range"] = tuple(float(v) for v in kwargs["value_range"])
    kwargs.setdefault("id", config_path.parent.name)
    kwargs.setdefault("title", kwargs["id"])
    try:
        return ModelSpec(**kwargs, bundled=weights)
    except TypeError as exc:
        raise GanModelsError(f"{config_path}: incomplete spec ({exc})") from exc

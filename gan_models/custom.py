"""Models users name themselves: a Hub repo or file, or a local file or folder, detected and made into a ModelSpec.

Id syntax (docs/custom-models.md has examples):

    [spaces/|models/]owner/name[/path/to/file.ext][@revision][#network][?option=value&...]
    https://host/path/file.ext[#network][?sha256=HEX&option=value&...]   a file by URL (gan_models.urlfetch)
    path/to/file.ext[#network][?option=value&...]          a local file (or a folder holding one weights file)

- `owner/name` alone: a repo written by `train.py --push-to-hub` (config.json + model.safetensors), else the
  repo's one weights file (one .safetensors wins over other formats).
- `#network`: one generator of a file that holds several (CycleGAN training files: `#G_A`, `#G_B`, `#netG_A`).
- options: `range=0,1` (value range of the network's pixels), `task=style|sketch2photo|upscale`, `tile=256|none`,
  `multiple=N` (input size multiple), `scale=N` (only when detection is wrong); for URLs `sha256=HEX` pins the
  file's digest. A URL's own query string cannot be given (`?` starts the options).

Safety: the size of a Hub file is read from the Hub's metadata (one bounded HEAD request) and checked against
`max_weights_mb` before anything is downloaded; local files are checked the same way; URLs are fetched by
`urlfetch.fetch_url` (https, allowed hosts, public addresses, the same cap before and while reading). Files are read by
`weights.read_state_dict` (safetensors, else `torch.load(weights_only=True)`): pickled code is refused.

Resolutions are cached (`CACHE_SIZE` entries, least recently used dropped): the same id gives the same spec
without a second download or detection. A local file is re-detected when its size or mtime changes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .detect import Detection, find_generators
from .errors import (
    GanModelsError,
    UnknownModelError,
    UnsupportedModelError,
    WeightsError,
    WeightsUnavailableError,
    first_line,
)
from .settings import DEFAULT_URL_HOSTS, hub_cache_dir, hub_endpoint, hub_offline, hub_token, user_cache_dir
from .specs import SPECS, TASKS, HubFile, ModelSpec, spec_from_config
from .urlfetch import check_sha256, fetch_url
from .weights import read_state_dict

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pth.tar")
OPTIONS = ("range", "task", "tile", "multiple", "scale", "sha256")
CACHE_SIZE = 32
SWITCH = "GAN_STUDIO_CUSTOM_MODELS"
_HUB_TIMEOUT_S = 10.0
_NAME = r"[A-Za-z0-9][\w.-]{0,95}"
_HUB_ID = re.compile(rf"^(?:(?P<kind>spaces|models)/)?(?P<repo>{_NAME}/{_NAME})(?:/(?P<file>[^@]+?))?"
                     r"(?:@(?P<rev>[\w.-]+))?$")
_SYNTAX = ("a Hub id [spaces/]owner/name[/file.pth][@revision][#network][?range=0,1], "
           "an https URL of a weights file [#network][?sha256=HEX], or a local weights file or folder")


@dataclass(frozen=True)
class ModelRef:
    """A parsed custom model id.

    Parameters:
        text: the id as given (the spec's id).
        local: the local file or folder, or None for the Hub.
        url: the https URL of the weights file (without #network and ?options), or None.
        repo_id, repo_type, filename, revision: the Hub location (filename None: the repo decides).
        network: the generator chosen in a file holding several ("G_B"), or None.
        options: user overrides (see module docstring).
    """

    text: str
    local: Path | None = None
    repo_id: str | None = None
    repo_type: str = "model"
    filename: str | None = None
    revision: str | None = None
    network: str | None = None
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def where(self) -> str:
        if self.local is not None:
            return str(self.local)
        if self.url is not None:
            return self.url
        kind = "spaces/" if self.repo_type == "space" else ""
        return f"{kind}{self.repo_id}" + (f"/{self.filename}" if self.filename else "") + (
            f"@{self.revision}" if self.revision else "")


def parse_model_ref(text: str, *, allow_local: bool = True) -> ModelRef:
    """Parse a custom model id (module docstring) without touching the network.

    Parameters:
        allow_local: False treats every id as a Hub id and never looks at this machine's files (what a public
            app must do with text its visitors type; their uploads are local paths the app itself passes).

    Raises:
        UnknownModelError: neither an existing local path nor a Hub id; the message gives the syntax and the
            curated ids.
    """
    if allow_local and Path(text).expanduser().exists():  # a file whose name holds '#' or '?'
        return ModelRef(text=text, local=Path(text).expanduser().resolve())
    base, _, query = text.partition("?")
    base, _, network = base.partition("#")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in OPTIONS or not sep:
            raise UnknownModelError(f"{text!r}: unknown option {item!r}; valid: "
                                    + ", ".join(f"{o}=..." for o in OPTIONS))
        options[key] = value
    common = {"text": text, "network": network or None, "options": options}
    if re.match(r"^[a-z][a-z0-9+.-]*://", base, re.IGNORECASE):  # fetch_url refuses what is not https
        try:
            if "sha256" in options:
                options["sha256"] = check_sha256(options["sha256"])
        except UnsupportedModelError as exc:
            raise UnknownModelError(f"{text!r}: {exc}") from None
        return ModelRef(url=base, **common)
    if "sha256" in options:
        raise UnknownModelError(f"{text!r}: sha256=... pins a file fetched by URL; Hub revisions pin with @commit")
    path = Path(base).expanduser()
    if allow_local and base and path.exists():
        return ModelRef(local=path.resolve(), **common)
    looks_local = base.startswith(("/", "./", "../", "~")) or "\\" in base
    match = None if looks_local else _HUB_ID.match(base)
    if match is None:
        where = ("no such local file or folder" if allow_local else "local files are not accepted here") if (
            looks_local) else ""
        raise UnknownModelError(f"unknown model {text!r}; choose one of: {', '.join(SPECS)}; or give "
                                + (_SYNTAX if allow_local else _SYNTAX.split(", or a local")[0])
                                + (f" ({where})" if where else ""))
    filename = match["file"]
    if filename is not None and not filename.endswith(WEIGHTS_SUFFIXES):
        raise UnknownModelError(f"{text!r}: {filename!r} is not a weights file; expected one of "
                                f"{', '.join(WEIGHTS_SUFFIXES)}")
    if filename is not None and {".", ".."} & set(filename.split("/")):
        raise UnknownModelError(f"{text!r}: '.' and '..' are not allowed in a Hub file path")
    return ModelRef(repo_id=match["repo"], repo_type="space" if match["kind"] == "spaces" else "model",
                    filename=filename, revision=match["rev"], **common)


# --- where the weights are -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Found:
    """A resolved weights file (before choosing a network): where it lives, its size, what it holds."""

    path: Path
    size: int
    generators: Mapping[str, Detection]
    repo_id: str | None = None
    repo_type: str = "model"
    filename: str | None = None
    revision: str | None = None
    config_spec: ModelSpec | None = None  # a train.py --push-to-hub repo: its config says what it is


def _check_size(size: int | None, max_weights_mb: int, where: str, *, before_download: bool = False) -> None:
    if size is not None and size > max_weights_mb * 1024 * 1024:
        raise UnsupportedModelError(f"{where}: {size / 1024 / 1024:.0f} MB is over this server's limit of "
                                    f"{max_weights_mb} MB (GAN_STUDIO_MAX_WEIGHTS_MB)"
                                    + ("; nothing was downloaded" if before_download else ""))


def _pick_weights_file(names: list[str], where: str) -> str:
    """The one weights file among `names` (one .safetensors wins: same weights, safer format)."""
    weights = sorted(n for n in names if n.endswith(WEIGHTS_SUFFIXES))
    safetensors = [n for n in weights if n.endswith(".safetensors")]
    if len(weights) == 1:
        return weights[0]
    if len(safetensors) == 1:
        return safetensors[0]
    if not weights:
        raise UnsupportedModelError(f"{where}: no weights file ({', '.join(WEIGHTS_SUFFIXES)}) among "
                                    f"{len(names)} files")
    shown = ", ".join(weights[:8]) + (f", ... ({len(weights)} in all)" if len(weights) > 8 else "")
    raise UnsupportedModelError(f"{where}: holds {len(weights)} weights files ({shown}); name one, e.g. "
                                f"'{where}/{weights[0]}'")


def _detect_file(path: Path, where: str) -> Mapping[str, Detection]:
    try:
        state = read_state_dict(path)
    except WeightsError as exc:  # named by the id, not by where this server keeps the file (Hub or URL cache)
        raise type(exc)(str(exc).replace(str(path), where)) from exc
    return find_generators(state, source=where)


def _find_url(ref: ModelRef, max_weights_mb: int, url_hosts: Sequence[str]) -> _Found:
    assert ref.url is not None
    path = fetch_url(ref.url, allowed_hosts=url_hosts, max_bytes=max_weights_mb * 1024 * 1024,
                     cache_dir=user_cache_dir() / "url", sha256=ref.options.get("sha256"))
    return _Found(path=path, size=path.stat().st_size, generators=_detect_file(path, ref.url))


def _find_local(ref: ModelRef, max_weights_mb: int) -> _Found:
    path = ref.local
    assert path is not None
    if path.is_dir():
        files = [p.name for p in path.iterdir() if p.is_file()]
        path = path / _pick_weights_file(files, str(path))
    size = path.stat().st_size
    _check_size(size, max_weights_mb, str(path))
    return _Found(path=path, size=size, generators=_detect_file(path, str(path)))


def _hub_files(ref: ModelRef) -> dict[str, int | None]:
    """{file: size} of the repo at ref.revision: from the Hub (one bounded request), else from the local cache."""
    from huggingface_hub import HfApi, snapshot_download

    reason = "offline mode (HF_HUB_OFFLINE=1)"
    if not hub_offline():
        try:
            info = HfApi(endpoint=hub_endpoint(), token=hub_token()).repo_info(
                ref.repo_id, repo_type=ref.repo_type, revision=ref.revision, files_metadata=True,
                timeout=_HUB_TIMEOUT_S)
            return {s.rfilename: s.size for s in info.siblings or []}
        except Exception as exc:  # noqa: BLE001 - unreachable Hub or no such repo: the cache may still hold it
            reason = first_line(exc)
    try:
        folder = Path(snapshot_download(ref.repo_id, repo_type=ref.repo_type, revision=ref.revision,
                                        cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not cached either: one message with the Hub's reason
        raise WeightsUnavailableError(f"{ref.where}: cannot list the repo ({reason}); not in the local cache "
                                      "either (a local path of that name does not exist)") from exc
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _hub_download(ref: ModelRef, filename: str, *, max_weights_mb: int, size: int | None = None) -> Path:
    """The cached file, or the Hub's after checking its size (HEAD, bounded, no retries) against the cap."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    where = _hub_where(ref, filename)
    cached = try_to_load_from_cache(ref.repo_id, filename, cache_dir=hub_cache_dir(), revision=ref.revision,
                                    repo_type=ref.repo_type)
    if isinstance(cached, str) and os.path.isfile(cached):
        _check_size(os.path.getsize(cached), max_weights_mb, where)
        return Path(cached)
    try:
        if not hub_offline():
            if size is None:
                url = hf_hub_url(ref.repo_id, filename, repo_type=ref.repo_type, revision=ref.revision,
                                 endpoint=hub_endpoint())
                size = get_hf_file_metadata(url, token=hub_token(), timeout=_HUB_TIMEOUT_S, endpoint=hub_endpoint(),
                                            retry_on_errors=False).size
            _check_size(size, max_weights_mb, where, before_download=True)
        path = hf_hub_download(ref.repo_id, filename, repo_type=ref.repo_type, revision=ref.revision,
                               cache_dir=hub_cache_dir(), local_files_only=hub_offline(), token=hub_token(),
                               etag_timeout=_HUB_TIMEOUT_S, endpoint=hub_endpoint())
    except UnsupportedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - every Hub/network failure means the same thing to the caller
        reason = "offline mode (HF_HUB_OFFLINE=1)" if hub_offline() else first_line(exc)
        raise WeightsUnavailableError(f"cannot get {where}: {reason}") from exc
    _check_size(os.path.getsize(path), max_weights_mb, where)  # the metadata may have had no size
    return Path(path)


def _hub_where(ref: ModelRef, filename: str) -> str:
    return f"{'spaces/' if ref.repo_type == 'space' else ''}{ref.repo_id}/{filename}"


def _snapshot_sha(path: Path) -> str | None:
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _find_hub(ref: ModelRef, max_weights_mb: int) -> _Found:
    filename, size, config_spec = ref.filename, None, None
    if filename is None:
        files = _hub_files(ref)
        if "config.json" in files and "model.safetensors" in files:  # train.py --push-to-hub layout
            filename, size = "model.safetensors", files["model.safetensors"]
            config = _hub_download(ref, "config.json", max_weights_mb=max_weights_mb, size=files["config.json"])
            _hub_download(ref, filename, max_weights_mb=max_weights_mb, size=size)  # spec_from_config wants both
            try:
                config_spec = spec_from_config(config.parent)
            except GanModelsError as exc:  # another library's config.json: detect from the weights instead
                if "not a gan_models model config" not in str(exc):
                    raise
        else:
            filename = _pick_weights_file(list(files), ref.where)
            size = files[filename]
    path = _hub_download(ref, filename, max_weights_mb=max_weights_mb, size=size)
    generators = {} if config_spec is not None else _detect_file(path, _hub_where(ref, filename))
    return _Found(path=path, size=path.stat().st_size, generators=generators, repo_id=ref.repo_id,
                  repo_type=ref.repo_type, filename=filename, revision=_snapshot_sha(path) or ref.revision,
                  config_spec=config_spec)


# --- the cache -----------------------------------------------------------------------------------------------------

_cache: OrderedDict[tuple, _Found] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_key(ref: ModelRef, url_hosts: Sequence[str]) -> tuple:
    if ref.local is not None:
        stat = ref.local.stat()  # a changed file is a new model
        return ("local", str(ref.local), stat.st_mtime_ns, stat.st_size)
    if ref.url is not None:  # the allow-list is part of the key: a host taken off it is refused at once
        return ("url", ref.url, ref.options.get("sha256"), tuple(url_hosts))
    return ("hub", ref.repo_type, ref.repo_id, ref.filename, ref.revision)


def _find(ref: ModelRef, max_weights_mb: int, url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> _Found:
    key = _cache_key(ref, url_hosts)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None and ref.url is not None and not found.path.is_file():
            found = None  # the URL download cache let it go: fetched again (to the same path)
        if found is not None:
            _cache.move_to_end(key)
    if found is None:
        # Outside the lock: a download may take minutes and must not block other ids.
        if ref.url is not None:
            found = _find_url(ref, max_weights_mb, url_hosts)
        else:
            found = _find_local(ref, max_weights_mb) if ref.local is not None else _find_hub(ref, max_weights_mb)
        with _cache_lock:
            _cache[key] = found
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    _check_size(found.size, max_weights_mb, ref.where)  # an earlier caller may have had a higher limit
    return found


def clear_cache() -> None:
    """Forget every resolved custom model (tests; an operator after deleting files)."""
    with _cache_lock:
        _cache.clear()


# --- public API ----------------------------------------------------------------------------------------------------

def _require_enabled(enabled: bool) -> None:
    if not enabled:
        raise UnsupportedModelError(f"custom models are switched off on this server ({SWITCH}=0); choose one of: "
                                    + ", ".join(SPECS))


def _apply_options(fields: dict[str, Any], options: Mapping[str, str], text: str) -> dict[str, Any]:
    try:
        if "range" in options:
            low, high = (float(v) for v in options["range"].split(","))
            if not low < high:
                raise ValueError("range needs low < high")
            fields["value_range"] = (low, high)
        if "task" in options:
            if options["task"] not in TASKS:
                raise ValueError(f"task must be one of {', '.join(TASKS)}")
            fields["task"] = options["task"]
        for name, field_name in (("multiple", "size_multiple"), ("scale", "scale")):
            if name in options:
                value = int(options[name])
                if value < 1:
                    raise ValueError(f"{name} must be >= 1")
                fields[field_name] = value
        if "tile" in options:
            fields["tile"] = None if options["tile"].lower() == "none" else int(options["tile"])
        tile, multiple = fields.get("tile"), fields.get("size_multiple", 1)
        if tile is not None and tile % multiple:  # round up so a size_multiple override does not break the tile
            fields["tile"] = -(-tile // multiple) * multiple
    except ValueError as exc:
        raise UnknownModelError(f"{text!r}: bad option value ({exc}); e.g. ?range=0,1&task=style&tile=none"
                                ) from None
    return fields


def _choose(found: _Found, ref: ModelRef) -> Detection:
    names = [n for n in found.generators if n]
    if ref.network is not None:
        choice = ref.network.removesuffix(".")
        if choice in found.generators:
            return found.generators[choice]
        offered = ", ".join(names) or "(one network: drop the #part)"
        raise UnsupportedModelError(f"{ref.where}: no generator {choice!r} in the file; it offers {offered}")
    if len(found.generators) == 1:
        return next(iter(found.generators.values()))
    raise UnsupportedModelError(f"{ref.where}: holds {len(names)} generators ({', '.join(names)}); choose one with "
                                f"#NAME, e.g. '{ref.text.split('?')[0]}#{names[-1]}' (UPIT/tmabraham CycleGAN: "
                                "G_B maps domain A to B)")


def _spec(found: _Found, ref: ModelRef) -> ModelSpec:
    hub = (HubFile(repo_id=found.repo_id, filename=found.filename, revision=found.revision,
                   repo_type=found.repo_type),) if found.repo_id is not None and found.filename else ()
    location = {"sources": hub, "bundled": found.path if found.repo_id is None else None}
    if found.config_spec is not None:
        fields = {f.name: getattr(found.config_spec, f.name) for f in dataclasses.fields(ModelSpec)}
        fields.update(location, id=ref.text, fallback=None, source=f"train.py model pushed to {ref.where}")
        return ModelSpec(**_apply_options(fields, ref.options, ref.text))
    detection = _choose(found, ref)
    stem = Path(found.filename or found.path.name).name
    title = (found.repo_id.split("/")[1] if found.repo_id else stem) + (
        f" {ref.network.removesuffix('.')}" if ref.network else "")
    fields = {**detection.spec_fields(), **location, "id": ref.text, "title": title,
              "licence": "as stated by the publisher" if found.repo_id or ref.url else "local file",
              "description": f"{detection.family}: {detection.summary}",
              "source": f"detected from {ref.where}"
              + (f" ({stem})" if ref.filename is None and ref.url is None else "")}
    return ModelSpec(**_apply_options(fields, ref.options, ref.text))


def resolve_custom(model_id: str, *, max_weights_mb: int, enabled: bool = True, allow_local: bool = True,
                   url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> ModelSpec:
    """The spec of a custom model id (module docstring): located, size-checked, downloaded, detected; cached.

    Parameters:
        model_id: Hub id, https URL or local path with optional @revision, #network and ?options.
        max_weights_mb: refuse weights files larger than this (Settings.max_weights_mb), before downloading.
        enabled: False refuses every custom id (Settings.custom_models).
        allow_local: False accepts Hub ids and URLs only (see `parse_model_ref`).
        url_hosts: hosts a URL may name or redirect to (Settings.url_hosts).

    Raises:
        UnknownModelError: not a local path nor a Hub id, or a bad option; the message gives the syntax.
        UnsupportedModelError: switched off, over the size limit, several generators and none chosen, a network
            we do not recognise (what was found), or a URL refused (host, address, redirect, scheme).
        WeightsUnavailableError: the Hub or the URL's host cannot be reached and nothing is cached.
        WeightsError: a corrupt file, one with pickled code, or a URL's file whose sha256 differs from the pin.
    """
    _require_enabled(enabled)
    ref = parse_model_ref(model_id, allow_local=allow_local)
    return _spec(_find(ref, max_weights_mb, url_hosts), ref)


def custom_generators(model_id: str, *, max_weights_mb: int, enabled: bool = True, allow_local: bool = True,
                      url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> list[ModelSpec]:
    """One spec per generator the file behind `model_id` holds (its `#network` part, if any, is ignored): one for
    most files, "G_A" and "G_B" for a CycleGAN training file. Their ids are ready for `resolve_custom`/`get_spec`.

    Raises: as resolve_custom.
    """
    _require_enabled(enabled)
    ref = parse_model_ref(model_id, allow_local=allow_local)
    found = _find(ref, max_weights_mb, url_hosts)
    base, _, query = ref.text.partition("?")
    base = base.partition("#")[0]
    if found.config_spec is not None or len(found.generators) == 1:
        names: list[str | None] = [None]
    else:
        names = [n for n in found.generators if n]
    specs = []
    for name in names:
        text = base + (f"#{name}" if name else "") + (f"?{query}" if query else "")
        specs.append(_spec(found, dataclasses.replace(ref, text=text, network=name)))
    return specs


def file_safe_name(model_id: str) -> str:
    """A short name for output files: curated ids unchanged, custom ids by their last part
    ('me/repo/net_G.pth#G_B?range=0,1' → 'net_G-G_B', '/data/x4.safetensors' → 'x4')."""
    base, _, network = model_id.partition("?")[0].partition("#")
    name = Path(base).name
    for suffix in sorted(WEIGHTS_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^\w.-]+", "-", name + (f"-{network}" if network else "")).strip("-.") or "model"


__all__ = ["CACHE_SIZE", "OPTIONS", "WEIGHTS_SUFFIXES", "ModelRef", "clear_cache", "custom_generators",
           "file_safe_name", "parse_model_ref", "resolve_custom"]

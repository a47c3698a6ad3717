"""From a model reference to a spec and the state dict it was made from: the one Hub fetch and the one resolver.

- `fetch_hub_file`: the cached copy, else one bounded HEAD request (no retries) whose size is checked against a
  cap before anything is downloaded, then the download. Curated specs (`weights.resolve_weights`) and custom ids
  both use it; failures are typed: `HubUnreachableError` (no answer) or `HubRefusedError` (the Hub said no).
- `resolve(ref)`: locate (local file or folder, Hub repo or file), size-check, read the file once, detect the
  networks in it, choose one (`#network`), apply `?options`, and return `Resolved(spec, state_dict)`.
- `resolve_custom(id)`: the spec only, through a bounded cache of resolutions (`CACHE_SIZE` entries, least
  recently used dropped): the same id gives the same spec without a second download or detection; a local file is
  re-detected when its size or mtime changes. The state dict it read (and any network spandrel built while
  detecting) waits in a one-entry slot (`take_parked`) for the loader that follows, so `get_spec(id)` then
  `load_model(spec)` reads the file once and builds its network once.

Safety: Hub sizes come from the Hub's metadata and are checked against `max_weights_mb` before downloading; local
files are checked the same way; files are read by `state_dict.read_state_dict` (pickled code is refused).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detect import Detection, find_generators
from .errors import (
    GanModelsError,
    HubRefusedError,
    HubUnreachableError,
    NotAModelConfigError,
    UnknownModelError,
    UnsupportedModelError,
    WeightsError,
    WeightsTooLargeError,
    WeightsUnavailableError,
    first_line,
)
from .modelspec import TASKS, HubFile, ModelSpec, spec_from_config
from .refs import WEIGHTS_SUFFIXES, ModelRef, join_id, parse_model_ref, split_id
from .settings import DEFAULT_URL_HOSTS, ENV, hub_cache_dir, hub_endpoint, hub_offline, hub_token, user_cache_dir
from .state_dict import read_state_dict
from .urlfetch import fetch_url

CACHE_SIZE = 32
HUB_TIMEOUT_S = 10.0
_OFFLINE = "offline mode (HF_HUB_OFFLINE=1)"

StateDict = dict[str, Any]


# --- the Hub ---------------------------------------------------------------------------------------------------------

def hub_where(hub: HubFile) -> str:
    """'spaces/owner/name/file.pth' for messages."""
    return f"{'spaces/' if hub.repo_type == 'space' else ''}{hub.repo_id}/{hub.filename}"


def check_size(size: int | None, max_weights_mb: int | None, where: str, *, before_download: bool = False) -> None:
    """Raise WeightsTooLargeError when `size` bytes are over `max_weights_mb` (None: no cap)."""
    if size is not None and max_weights_mb is not None and size > max_weights_mb * 1024 * 1024:
        raise WeightsTooLargeError(f"{where}: {size / 1024 / 1024:.0f} MB is over this server's limit of "
                                   f"{max_weights_mb} MB ({ENV['max_weights_mb']})"
                                   + ("; nothing was downloaded" if before_download else ""))


def cached_hub_file(hub: HubFile) -> Path | None:
    """The file in the local Hugging Face cache, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=hub_cache_dir(), revision=hub.revision,
                                    repo_type=hub.repo_type)
    return Path(cached) if isinstance(cached, str) and os.path.isfile(cached) else None


def _download(hub: HubFile, *, max_weights_mb: int | None, size: int | None) -> Path:
    """One HEAD request without retries (skipped when a repo listing gave the size), the cap, then the download.

    hf_hub_download alone retries network errors with a 60 s timeout and back-off (minutes against a silent or
    unresolvable host); past the probe the Hub has answered, and the download may take as long as the file needs.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    token, endpoint = hub_token(), hub_endpoint()
    if size is None:
        url = hf_hub_url(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision, endpoint=endpoint)
        size = get_hf_file_metadata(url, token=token, timeout=HUB_TIMEOUT_S, endpoint=endpoint,
                                    retry_on_errors=False).size
    check_size(size, max_weights_mb, hub_where(hub), before_download=True)
    return Path(hf_hub_download(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision,
                                cache_dir=hub_cache_dir(), token=token, etag_timeout=HUB_TIMEOUT_S, endpoint=endpoint))


def _hub_answered(exc: BaseException) -> bool:
    """The Hub replied (no such repo or file, gated, ...), so another source on it may still work."""
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, HfHubHTTPError)


def fetch_hub_file(hub: HubFile, *, max_weights_mb: int | None = None, size: int | None = None) -> Path:
    """The one Hub fetch: the cached file, else the Hub's after checking its size against `max_weights_mb`.

    Parameters:
        max_weights_mb: refuse a larger file before downloading it (None: no cap, for curated specs).
        size: the size a repo listing already gave, to skip the HEAD request.

    Raises:
        WeightsTooLargeError: over the cap (nothing was downloaded).
        HubUnreachableError: offline mode, or the Hub did not answer. HubRefusedError: it answered with an error.
        Both say "cannot get WHERE: reason" in one line; the Hub client's exception is the `__cause__`.
    """
    where = hub_where(hub)
    cached = cached_hub_file(hub)
    if cached is not None:
        check_size(cached.stat().st_size, max_weights_mb, where)
        return cached
    if hub_offline():
        raise HubUnreachableError(f"cannot get {where}: {_OFFLINE}")
    try:
        path = _download(hub, max_weights_mb=max_weights_mb, size=size)
    except GanModelsError:
        raise
    except Exception as exc:  # noqa: BLE001 - every Hub/network failure means one of two things to the caller
        kind = HubRefusedError if _hub_answered(exc) else HubUnreachableError
        raise kind(f"cannot get {where}: {first_line(exc)}") from exc
    if max_weights_mb is not None:  # the metadata may have had no size
        check_size(path.stat().st_size, max_weights_mb, where)
    return path


def _hub_files(ref: ModelRef) -> dict[str, int | None]:
    """{file: size} of the repo at ref.revision: from the Hub (one bounded request), else from the local cache."""
    from huggingface_hub import HfApi, snapshot_download

    reason = _OFFLINE
    if not hub_offline():
        try:
            info = HfApi(endpoint=hub_endpoint(), token=hub_token()).repo_info(
                ref.repo_id, repo_type=ref.repo_type, revision=ref.revision, files_metadata=True,
                timeout=HUB_TIMEOUT_S)
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


# --- the state dict read last, for the loader that follows --------------------------------------------------------

_slot: tuple[tuple, StateDict, dict[str, Any]] | None = None
_slot_lock = threading.Lock()


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _park(path: Path, state: StateDict, built: dict[str, Any]) -> None:
    global _slot
    with _slot_lock:
        _slot = (_file_key(path), state, built)


def take_parked(path: Path) -> tuple[StateDict, dict[str, Any]] | None:
    """What the last resolution read from `path` (unchanged since), handed over once: the state dict as read, and
    the networks spandrel built while detecting (by key prefix, "" for the whole file); else None.

    One entry: it lives from a resolution to the load that follows it (or to the next resolution).
    """
    global _slot
    with _slot_lock:
        if _slot is None or not path.is_file() or _slot[0] != _file_key(path):
            return None
        (_, state, built), _slot = _slot, None
    return state, built


def take_state_dict(path: Path) -> StateDict | None:
    """The state dict of `take_parked`, or None."""
    parked = take_parked(path)
    return parked[0] if parked else None


# --- where the weights are ------------------------------------------------------------------------------------------

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


def _read_and_detect(path: Path, where: str) -> Mapping[str, Detection]:
    try:
        state = read_state_dict(path)
    except WeightsError as exc:  # named by the id, not by where this server keeps the file (Hub or URL cache)
        raise type(exc)(str(exc).replace(str(path), where)) from exc
    built: dict[str, Any] = {}
    generators = find_generators(state, source=where, built=built)
    _park(path, state, built)
    return generators


def _find_local(ref: ModelRef, max_weights_mb: int) -> _Found:
    path = ref.local
    assert path is not None
    if path.is_dir():
        files = [p.name for p in path.iterdir() if p.is_file()]
        path = path / _pick_weights_file(files, str(path))
    size = path.stat().st_size
    check_size(size, max_weights_mb, str(path))
    return _Found(path=path, size=size, generators=_read_and_detect(path, str(path)))


def _find_url(ref: ModelRef, max_weights_mb: int, url_hosts: Sequence[str]) -> _Found:
    assert ref.url is not None
    path = fetch_url(ref.url, allowed_hosts=url_hosts, max_bytes=max_weights_mb * 1024 * 1024,
                     cache_dir=user_cache_dir() / "url", sha256=dict(ref.options).get("sha256"))
    return _Found(path=path, size=path.stat().st_size, generators=_read_and_detect(path, ref.url))


def _snapshot_sha(path: Path) -> str | None:
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _find_hub(ref: ModelRef, max_weights_mb: int) -> _Found:
    assert ref.repo_id is not None

    def hub(filename: str) -> HubFile:
        return HubFile(repo_id=ref.repo_id, filename=filename, revision=ref.revision, repo_type=ref.repo_type)

    def fetch(filename: str, size: int | None) -> Path:
        return fetch_hub_file(hub(filename), max_weights_mb=max_weights_mb, size=size)

    filename, size, config_spec = ref.filename, None, None
    folder = filename.rpartition("/")[0] + "/" if filename and "/" in filename else ""
    if filename is None or filename == f"{folder}model.safetensors":
        files = _hub_files(ref)
        # train.py --push-to-hub layout: owner/name, or a folder of it (owner/name/reverse/model.safetensors)
        if f"{folder}config.json" in files and f"{folder}model.safetensors" in files:
            filename, size = f"{folder}model.safetensors", files[f"{folder}model.safetensors"]
            config = fetch(f"{folder}config.json", files[f"{folder}config.json"])
            fetch(filename, size)  # spec_from_config wants both
            try:
                config_spec = spec_from_config(config.parent)
            except NotAModelConfigError:  # another library's config.json: detect from the weights instead
                pass
        elif filename is None:
            filename = _pick_weights_file(list(files), ref.where)
            size = files[filename]
    path = fetch(filename, size)
    generators = {} if config_spec is not None else _read_and_detect(path, ref.hub_where(filename))
    return _Found(path=path, size=path.stat().st_size, generators=generators, repo_id=ref.repo_id,
                  repo_type=ref.repo_type, filename=filename, revision=_snapshot_sha(path) or ref.revision,
                  config_spec=config_spec)


# --- the cache of resolutions -----------------------------------------------------------------------------------------

_cache: OrderedDict[tuple, _Found] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_key(ref: ModelRef, url_hosts: Sequence[str]) -> tuple:
    if ref.local is not None:
        stat = ref.local.stat()  # a changed file is a new model
        return ("local", str(ref.local), stat.st_mtime_ns, stat.st_size)
    if ref.url is not None:  # the allow-list is part of the key: a host taken off it is refused at once
        return ("url", ref.url, dict(ref.options).get("sha256"), tuple(url_hosts))
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
    check_size(found.size, max_weights_mb, ref.where)  # an earlier caller may have had a higher limit
    return found


def clear_cache() -> None:
    """Forget every resolved custom model and the state dict waiting for a loader (tests; an operator after
    deleting files)."""
    global _slot
    with _cache_lock:
        _cache.clear()
    with _slot_lock:
        _slot = None


# --- from what was found to a spec ----------------------------------------------------------------------------------

def _require_enabled(enabled: bool, known: Iterable[str]) -> None:
    if not enabled:
        raise UnsupportedModelError(f"custom models are switched off on this server ({ENV['custom_models']}=0); "
                                    "choose one of: " + ", ".join(known))


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
    base, _, _ = split_id(ref.text)
    raise UnsupportedModelError(f"{ref.where}: holds {len(names)} generators ({', '.join(names)}); choose one with "
                                f"#NAME, e.g. '{join_id(base, names[-1], '')}' (UPIT/tmabraham CycleGAN: "
                                "G_B maps domain A to B)")


def _spec(found: _Found, ref: ModelRef) -> ModelSpec:
    hub = (HubFile(repo_id=found.repo_id, filename=found.filename, revision=found.revision,
                   repo_type=found.repo_type),) if found.repo_id is not None and found.filename else ()
    location = {"sources": hub, "bundled": found.path if found.repo_id is None else None}
    options = dict(ref.options)
    if found.config_spec is not None:
        fields = {f.name: getattr(found.config_spec, f.name) for f in dataclasses.fields(ModelSpec)}
        fields.update(location, id=ref.text, fallback=None, source=f"train.py model pushed to {ref.where}")
        return ModelSpec(**_apply_options(fields, options, ref.text))
    detection = _choose(found, ref)
    stem = Path(found.filename or found.path.name).name
    title = (found.repo_id.split("/")[1] if found.repo_id else stem) + (
        f" {ref.network.removesuffix('.')}" if ref.network else "")
    fields = {**detection.spec_fields(), **location, "id": ref.text, "title": title,
              "licence": "as stated by the publisher" if found.repo_id or ref.url else "local file",
              "description": f"{detection.family}: {detection.summary}",
              "source": f"detected from {ref.where}"
              + (f" ({stem})" if ref.filename is None and ref.url is None else "")}
    return ModelSpec(**_apply_options(fields, options, ref.text))


# --- public API ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resolved:
    """A custom model resolved: its spec and the tensors of its weights file as read (the whole file; the spec's
    `key_prefix` picks the network), for `weights.load_model(spec, state_dict=...)`."""

    spec: ModelSpec
    state_dict: StateDict


def resolve(ref: ModelRef, *, max_weights_mb: int, url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> Resolved:
    """Locate, size-check, read once, detect and describe the model `ref` names (see the module docstring).

    Raises: as `resolve_custom` (but never for switched-off custom models: the caller decides that).
    """
    found = _find(ref, max_weights_mb, url_hosts)
    spec = _spec(found, ref)
    return Resolved(spec=spec, state_dict=take_state_dict(found.path) or read_state_dict(found.path))


def resolve_custom(model_id: str, *, max_weights_mb: int, enabled: bool = True, allow_local: bool = True,
                   known: Iterable[str] = (), url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> ModelSpec:
    """The spec of a custom model id (`refs` module docstring): located, size-checked, downloaded, detected; cached.

    Parameters:
        model_id: Hub id, https URL or local path with optional @revision, #network and ?options.
        max_weights_mb: refuse weights files larger than this (Settings.max_weights_mb), before downloading.
        enabled: False refuses every custom id (Settings.custom_models).
        allow_local: False accepts Hub ids and URLs only (see `refs.parse_model_ref`).
        known: the curated ids, named in messages (`custom.resolve_custom` passes SPECS).
        url_hosts: hosts a URL may name or redirect to (Settings.url_hosts; see `urlfetch`).

    Raises:
        UnknownModelError: not a local path nor a Hub id, or a bad option; the message gives the syntax.
        UnsupportedModelError: switched off, over the size limit (WeightsTooLargeError), several generators and
            none chosen, or a network we do not recognise (what was found and the supported families).
        WeightsUnavailableError: the Hub cannot be reached and nothing is cached.
        WeightsError: a corrupt file or one with pickled code.
    """
    _require_enabled(enabled, known)
    ref = parse_model_ref(model_id, allow_local=allow_local, known=known)
    return _spec(_find(ref, max_weights_mb, url_hosts), ref)


def custom_generators(model_id: str, *, max_weights_mb: int, enabled: bool = True, allow_local: bool = True,
                      known: Iterable[str] = (), url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> list[ModelSpec]:
    """One spec per generator the file behind `model_id` holds (its `#network` part, if any, is ignored): one for
    most files, "G_A" and "G_B" for a CycleGAN training file. Their ids are ready for `resolve_custom`/`get_spec`.

    Raises: as resolve_custom.
    """
    _require_enabled(enabled, known)
    ref = parse_model_ref(model_id, allow_local=allow_local, known=known)
    found = _find(ref, max_weights_mb, url_hosts)
    base, _, query = split_id(ref.text)
    names = [None] if found.config_spec is not None or len(found.generators) == 1 else [
        n for n in found.generators if n]
    return [_spec(found, dataclasses.replace(ref, text=join_id(base, name, query), network=name)) for name in names]

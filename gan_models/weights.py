"""Find, read and load generator weights safely: `load_model` is the one loader.

Resolution order for a spec (first hit wins):
  1. the bundled file shipped in `weights/` (our own defaults) or a local file,
  2. the local Hugging Face cache, for each of the spec's Hub sources in turn (no network),
  3. `hf_hub_download` of each source in turn at its revision (honours HF_HUB_OFFLINE, HF_HOME / HF_HUB_CACHE,
     HF_TOKEN, HF_ENDPOINT, read through `settings`).
When all of them fail and the spec names a bundled `fallback` spec, `load_model` loads that instead and says why.

Files are read with safetensors when possible, else `torch.load(weights_only=True)`: never an arbitrary pickle.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file as save_safetensors
from torch import nn

from . import settings
from .archs import STATE_BUILT_ARCHS, build_arch
from .errors import GanModelsError, HubRefusedError, WeightsUnavailableError, first_line
from .files import atomic_write
from .resolve import cached_hub_file, fetch_hub_file, take_parked
from .specs import SPECS, WEIGHTS_DIR, HubFile, ModelSpec
from .state_dict import (  # re-exported: tests and older callers import them from here
    canonicalize_state_dict,
    load_state_dict_strict,
    read_state_dict,
    unwrap_state_dict,
)

Origin = Literal["bundled", "local", "hub-cache", "hub"]


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of a loaded model came from, for info lines and export records.

    Parameters:
        path: the file that was read.
        origin: "bundled" (shipped in weights/), "local" (a user's folder), "hub-cache" or "hub" (downloaded now).
        spec_id: the spec whose weights were read (the fallback's id after a fallback).
        hub: the Hub file it is (one of the spec's sources) for origins "hub-cache" and "hub", else None.
    """

    path: Path
    origin: Origin
    spec_id: str
    hub: HubFile | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A generator ready to run (eval mode, fp32), what it is and where its weights came from.

    Parameters:
        spec: the model that runs (the bundled fallback's spec after a fallback).
        module: the network with its weights loaded strictly.
        source: the weights file that was read.
        requested: the model that was asked for (`spec` unless it fell back; None means `spec`).
        fallback_reason: a sentence for users saying why `spec` stands in for `requested`; None without a fallback.
    """

    spec: ModelSpec
    module: nn.Module
    source: WeightsSource
    requested: ModelSpec | None = None
    fallback_reason: str | None = None

    def __post_init__(self) -> None:
        if self.requested is None:
            object.__setattr__(self, "requested", self.spec)

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None


def load_model(
    spec: ModelSpec, *, allow_fallback: bool = True, specs: Mapping[str, ModelSpec] = SPECS,
    state_dict: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Build `spec`'s network and load its weights strictly: the one loader of the library.

    Parameters:
        spec: the model to load.
        state_dict: the tensors of `spec`'s weights file, already read (`resolve.resolve(ref).state_dict`), so the
            file is not read again; None reads it (or takes what the resolution of `spec` just read).
        allow_fallback: when the weights cannot be had (Hub unreachable, offline, nothing cached) and the spec names
            a `fallback` in `specs`, load that instead and say why in `fallback_reason`. Files that exist but are
            unusable (corrupt, unsafe, wrong architecture) never fall back: the fault is not the network's.
        specs: where the fallback id is looked up (the app passes the models it offers).

    Raises:
        WeightsUnavailableError: the weights cannot be obtained and there is no fallback, it is disallowed, or it
            failed too (the message then gives both reasons).
        WeightsError: a weights file that cannot be used; the message names the file and the reason.
    """
    try:
        return _load_exact(spec, state_dict)
    except WeightsUnavailableError as exc:
        fallback = specs.get(spec.fallback) if allow_fallback and spec.fallback not in (None, spec.id) else None
        if fallback is None:
            raise
        try:
            loaded = _load_exact(fallback)
        except GanModelsError as fallback_exc:
            raise WeightsUnavailableError(f"{exc}; its fallback {fallback.id} failed too: {fallback_exc}") from exc
        reason = f"Hub unreachable for {spec.id}; using the bundled {fallback.id} instead ({exc})"
        return LoadedModel(spec=fallback, module=loaded.module, source=loaded.source, requested=spec,
                           fallback_reason=reason)


def _load_exact(spec: ModelSpec, state: Mapping[str, Any] | None = None) -> LoadedModel:
    source = resolve_weights(spec)
    built: dict[str, nn.Module] = {}
    if state is None:  # what the resolution of this file just read (and spandrel built), else the file
        state, built = take_parked(source.path) or (read_state_dict(source.path), {})
    handed = built.get(spec.key_prefix or "") if spec.arch == "spandrel" else None
    if handed is not None:  # spandrel built this very network from these tensors while detecting it
        model = handed
    elif spec.arch in STATE_BUILT_ARCHS:  # the checkpoint says how wide and deep the network is; loaded strictly
        model = STATE_BUILT_ARCHS[spec.arch](unwrap_state_dict(state, key_prefix=spec.key_prefix))
    else:
        model = build_generator(spec)
        state = canonicalize_state_dict(state, model=model, key_prefix=spec.key_prefix)
        load_state_dict_strict(model, state, source=f"{spec.id} ({source.path})")
    return LoadedModel(spec=spec, module=model.float().eval(), source=source)


def resolve_weights(spec: ModelSpec) -> WeightsSource:
    """Return the weights file of `spec` without loading it.

    Every Hub source is looked up in the local cache first; only then is each downloaded in turn. A download stops
    at the first source whose failure was not an answer from the Hub (offline, DNS, timeout): the others live on
    the same Hub.

    Raises:
        WeightsUnavailableError: nothing bundled, not in the cache, and the Hub cannot be reached or has none of
            the files (the message names every location and why it failed).
    """
    if spec.bundled is not None:
        if spec.bundled.is_file():
            origin: Origin = "bundled" if not spec.sources and _is_in_weights_dir(spec.bundled) else "local"
            return WeightsSource(path=spec.bundled, origin=origin, spec_id=spec.id)
        raise WeightsUnavailableError(f"{spec.id}: weights file {spec.bundled} is missing")
    if not spec.sources:
        raise WeightsUnavailableError(f"{spec.id}: the spec names neither a bundled file nor a Hub file")

    for hub in spec.sources:
        if (cached := cached_hub_file(hub)) is not None:
            return WeightsSource(path=cached, origin="hub-cache", spec_id=spec.id, hub=hub)
    if settings.hub_offline():
        where = " nor ".join(str(hub) for hub in spec.sources)
        raise WeightsUnavailableError(f"{spec.id}: cannot get {where}: offline mode (HF_HUB_OFFLINE=1)")
    failures: list[str] = []
    error: BaseException | None = None
    for i, hub in enumerate(spec.sources):
        try:
            return WeightsSource(path=fetch_hub_file(hub), origin="hub", spec_id=spec.id, hub=hub)
        except WeightsUnavailableError as exc:
            error = exc.__cause__ or exc
            failures.append(f"{hub}: {type(error).__name__}: {first_line(error)}")
            if not isinstance(exc, HubRefusedError):
                if untried := spec.sources[i + 1 :]:
                    failures.append(" nor ".join(map(str, untried)) + ": not tried (the Hub did not answer)")
                break
    raise WeightsUnavailableError(f"{spec.id}: cannot get " + "; nor ".join(failures)) from error


def _is_in_weights_dir(path: Path) -> bool:
    try:
        path.resolve().relative_to(WEIGHTS_DIR.resolve())
    except ValueError:
        return False
    return True


def build_generator(spec: ModelSpec) -> nn.Module:
    """The spec's network with freshly initialised weights (used by training and tests)."""
    return build_arch(spec.arch, **dict(spec.arch_kwargs))


def save_model_folder(
    module: nn.Module, out_dir: str | Path, *, spec_fields: dict, dtype: torch.dtype = torch.float32
) -> Path:
    """Write `out_dir/model.safetensors` + `out_dir/config.json`, the layout `spec_from_config` loads.

    Both files are written to temporary names and renamed into place, so a crash never leaves a half file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype=dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in module.state_dict().items()}
    atomic_write(out_dir / "model.safetensors", lambda p: save_safetensors(state, str(p)))
    config = {"format": "gan_models/1", **spec_fields}
    atomic_write(out_dir / "config.json", lambda p: p.write_text(json.dumps(config, indent=2, default=str)))
    return out_dir


# --- removed in 0.1 without a deprecation; back for one release, each warning once per call ----------------------


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning,
                  stacklevel=3)


def load_generator(spec: ModelSpec) -> nn.Module:
    """Deprecated: `load_model(spec, allow_fallback=False).module` (it never fell back)."""
    _deprecated("load_generator(spec)", "load_model(spec).module")
    return load_model(spec, allow_fallback=False).module


def load_generator_with_source(spec: ModelSpec) -> tuple[nn.Module, WeightsSource]:
    """Deprecated: `load_model(spec, allow_fallback=False)`, whose `.module` and `.source` these are."""
    _deprecated("load_generator_with_source(spec)", "load_model(spec) (its .module and .source)")
    loaded = load_model(spec, allow_fallback=False)
    return loaded.module, loaded.source


def load_with_fallback(spec: ModelSpec) -> LoadedModel:
    """Deprecated: `load_model(spec)` falls back by default."""
    _deprecated("load_with_fallback(spec)", "load_model(spec)")
    return load_model(spec)

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
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from . import settings
from .archs import STATE_BUILT_ARCHS, build_arch
from .errors import GanModelsError, WeightsError, WeightsUnavailableError, first_line
from .files import atomic_write
from .specs import SPECS, HubFile, ModelSpec

Origin = Literal["bundled", "local", "hub-cache", "hub"]

# Checkpoint wrappers seen in the wild, most specific first (Real-ESRGAN: params_ema / params; SRGAN-PyTorch and
# many training scripts: state_dict).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_NORM_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_HUB_TIMEOUT_S = 10.0
# How torch.save files begin: a zip archive (PyTorch >= 1.6), else a pickle of protocol 2+ (the legacy format).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


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
    spec: ModelSpec, *, allow_fallback: bool = True, specs: Mapping[str, ModelSpec] = SPECS
) -> LoadedModel:
    """Build `spec`'s network and load its weights strictly: the one loader of the library.

    Parameters:
        spec: the model to load.
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
        return _load_exact(spec)
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


def _load_exact(spec: ModelSpec) -> LoadedModel:
    source = resolve_weights(spec)
    state = read_state_dict(source.path)
    if spec.arch in STATE_BUILT_ARCHS:  # the checkpoint says how wide and deep the network is; loaded strictly
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

    # Imported here so that `import gan_models` stays fast and works without the Hub client's optional deps.
    from huggingface_hub import try_to_load_from_cache

    cache_dir = settings.hub_cache_dir()
    for hub in spec.sources:
        cached = try_to_load_from_cache(
            hub.repo_id, hub.filename, cache_dir=cache_dir, revision=hub.revision, repo_type=hub.repo_type
        )
        if isinstance(cached, str) and os.path.isfile(cached):
            return WeightsSource(path=Path(cached), origin="hub-cache", spec_id=spec.id, hub=hub)
    if settings.hub_offline():
        where = " nor ".join(str(hub) for hub in spec.sources)
        raise WeightsUnavailableError(f"{spec.id}: cannot get {where}: offline mode (HF_HUB_OFFLINE=1)")
    failures: list[str] = []
    error: Exception | None = None
    for i, hub in enumerate(spec.sources):
        try:
            return WeightsSource(path=_download(hub, cache_dir), origin="hub", spec_id=spec.id, hub=hub)
        except Exception as exc:  # noqa: BLE001 - every Hub/network failure means the same thing to the caller
            error = exc
            failures.append(f"{hub}: {type(exc).__name__}: {first_line(exc)}")
            if not _hub_answered(exc):
                if untried := spec.sources[i + 1 :]:
                    failures.append(" nor ".join(map(str, untried)) + ": not tried (the Hub did not answer)")
                break
    raise WeightsUnavailableError(f"{spec.id}: cannot get " + "; nor ".join(failures)) from error


def _download(hub: HubFile, cache_dir: Path) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    token, endpoint = settings.hub_token(), settings.hub_endpoint()
    # One HEAD request without retries first: hf_hub_download retries network errors with a 60 s timeout and
    # back-off (minutes against a silent or unresolvable host). Past this probe the Hub has answered, and the
    # download may take as long as the file needs.
    get_hf_file_metadata(
        hf_hub_url(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision, endpoint=endpoint),
        token=token, timeout=_HUB_TIMEOUT_S, endpoint=endpoint, retry_on_errors=False,
    )
    path = hf_hub_download(
        hub.repo_id,
        hub.filename,
        repo_type=hub.repo_type,
        revision=hub.revision,
        cache_dir=cache_dir,
        token=token,
        etag_timeout=_HUB_TIMEOUT_S,
        endpoint=endpoint,
    )
    return Path(path)


def _hub_answered(exc: BaseException) -> bool:
    """The Hub replied (no such repo or file, gated, ...), so another source on it may still work."""
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, HfHubHTTPError)


def _is_in_weights_dir(path: Path) -> bool:
    from .specs import WEIGHTS_DIR

    try:
        path.resolve().relative_to(WEIGHTS_DIR.resolve())
    except ValueError:
        return False
    return True


def read_state_dict(path: str | Path) -> dict[str, object]:
    """Read a weights file into a dict without running pickled code.

    safetensors is tried first (by extension or header); anything else goes through `torch.load(weights_only=True)`,
    which refuses pickles that would construct arbitrary objects.

    Raises:
        WeightsError: corrupt, truncated or unsafe file; the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise WeightsError(f"{path}: is a Git LFS pointer, not the weights: a {path.stat().st_size}-byte text "
                           "file naming the real file; download the file itself (git lfs pull, or the Hub's "
                           "download link)")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        try:
            return dict(load_safetensors(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from exc
    if not head.startswith(_TORCH_MAGIC):
        raise WeightsError(f"{path}: not a weights file (neither safetensors nor a PyTorch checkpoint)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        text = str(exc)
        unsafe = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", text, re.IGNORECASE)
        if unsafe:  # the pickle names a callable: constructing it could run code
            raise WeightsError(
                f"{path}: refused: the file holds pickled objects other than tensors ({unsafe.group(1)}; possible code "
                "execution); only safetensors or plain tensor checkpoints are loaded"
            ) from exc
        if isinstance(exc, (zipfile.BadZipFile, EOFError, RuntimeError, OSError)) or "zip" in text.lower():
            raise WeightsError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__})") from exc
        # Anything else the safe unpickler stops at: random bytes, a text file, pickle opcodes it does not accept.
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n", text)
        reason = detail.group(1) if detail else f"{type(exc).__name__}: {first_line(exc, limit=120)}"
        raise WeightsError(f"{path}: refused: not a plain tensor checkpoint, corrupt or of an unsupported kind "
                           f"({reason}); use safetensors or a torch.save'd dict of tensors") from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _looks_like_safetensors(path: Path) -> bool:
    # safetensors files start with a little-endian u64 header length followed by a JSON object.
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def canonicalize_state_dict(
    state: dict[str, object], *, model: nn.Module, key_prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a checkpoint's keys onto `model`'s keys: the one place that knows the quirks of real files.

    - unwraps `params_ema` / `params` / `state_dict` wrappers,
    - keeps only `key_prefix` entries (e.g. "G_B." in a file holding several networks) and strips the prefix,
    - strips `module.` (DataParallel) and `_orig_mod.` (torch.compile) prefixes,
    - drops InstanceNorm running statistics that old CycleGAN files carry but the network has no buffer for,
    - adds or removes a leading `model.` when that alone makes the key sets match.
    """
    unwrapped = unwrap_state_dict(state, key_prefix=key_prefix)
    expected = model.state_dict().keys()
    candidates = (unwrapped, {f"model.{k}": v for k, v in unwrapped.items()},
                  {k.removeprefix("model."): v for k, v in unwrapped.items()})
    # Stray statistics are judged under the candidate's names: a BatchNorm's running_mean is kept once renamed.
    kept = [{k: v for k, v in c.items() if k in expected or not k.endswith(_NORM_STAT_SUFFIXES)} for c in candidates]
    return next((c for c in kept if set(c) == set(expected)), kept[0])


def unwrap_state_dict(state: Mapping[str, Any], *, key_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The model-independent half of canonicalisation: tensors only, keyed as the network names them.

    Unwraps a `params_ema` / `params` / `state_dict` wrapper, flattens nested dicts (`{"netG_A": {...}}` becomes
    `netG_A.<key>`), keeps only `key_prefix` entries (prefix removed), strips `module.` / `_orig_mod.` prefixes.
    """
    for wrapper in _WRAPPER_KEYS:
        inner = state.get(wrapper)
        if isinstance(inner, dict) and inner:
            state = inner
            break
    flat: dict[str, torch.Tensor] = {}
    _flatten(state, "", flat)
    if key_prefix:
        flat = {k[len(key_prefix):]: v for k, v in flat.items() if k.startswith(key_prefix)}
    return {_strip_prefixes(k): v for k, v in flat.items()}


def _flatten(state: Mapping[str, Any], prefix: str, out: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + str(key)] = value
        elif isinstance(value, Mapping) and prefix.count(".") < 2:  # bounded: training files nest one or two levels
            _flatten(value, f"{prefix}{key}.", out)


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """`load_state_dict(strict=True)` with an error that says which keys and shapes did not match."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(
            f"{source}: does not match {type(model).__name__} (wrong architecture or variant?); " + "; ".join(parts)
        )
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)


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



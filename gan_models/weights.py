"""Find, read and load generator weights safely.

Resolution order for a spec (first hit wins):
  1. the bundled file shipped in `weights/` (our own defaults),
  2. the local Hugging Face cache at the pinned revision (no network),
  3. `hf_hub_download` at the pinned revision (honours HF_HUB_OFFLINE, HF_HOME / HF_HUB_CACHE, HF_TOKEN).
When 2 and 3 fail and the spec names a bundled `fallback` spec, `load_with_fallback` loads that instead and says so.

Files are read with safetensors when possible, else `torch.load(weights_only=True)`: never an arbitrary pickle.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from .archs import build_arch
from .errors import WeightsError, WeightsUnavailableError
from .files import atomic_write
from .specs import SPECS, ModelSpec

Origin = Literal["bundled", "local", "hub-cache", "hub"]

# Checkpoint wrappers seen in the wild, most specific first (Real-ESRGAN: params_ema / params; SRGAN-PyTorch and
# many training scripts: state_dict).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_NORM_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of a loaded model came from, for the UI's info line.

    Parameters:
        path: the file that was read.
        origin: "bundled" (shipped in weights/), "local" (a user's folder), "hub-cache" or "hub" (downloaded now).
        spec_id: the spec whose weights were loaded (differs from the requested one after a fallback).
        note: a sentence for users, e.g. why a fallback was used.
    """

    path: Path
    origin: Origin
    spec_id: str
    note: str = ""

    @property
    def fell_back(self) -> bool:
        return bool(self.note) and self.note.startswith("Hub unreachable")


@dataclass(frozen=True)
class LoadedModel:
    """A generator ready to run, the spec that describes it and where its weights came from."""

    spec: ModelSpec
    module: nn.Module
    source: WeightsSource


def _hub_cache_dir() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, read at call time (not import time)."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache)
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_weights(spec: ModelSpec) -> WeightsSource:
    """Return the weights file of `spec` without loading it.

    Raises:
        WeightsUnavailableError: nothing bundled, not in the cache, and the Hub cannot be reached (the message says
            why and how to fix it).
    """
    if spec.bundled is not None:
        if spec.bundled.is_file():
            origin: Origin = "bundled" if spec.repo_id is None and _is_in_weights_dir(spec.bundled) else "local"
            return WeightsSource(path=spec.bundled, origin=origin, spec_id=spec.id)
        raise WeightsUnavailableError(f"{spec.id}: weights file {spec.bundled} is missing")
    if spec.repo_id is None or spec.filename is None:
        raise WeightsUnavailableError(f"{spec.id}: the spec names neither a bundled file nor a Hub file")

    # Imported here so that `import gan_models` stays fast and works without the Hub client's optional deps.
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    cache_dir = _hub_cache_dir()
    cached = try_to_load_from_cache(
        spec.repo_id, spec.filename, cache_dir=cache_dir, revision=spec.revision, repo_type=spec.repo_type
    )
    if isinstance(cached, str) and os.path.isfile(cached):
        return WeightsSource(path=Path(cached), origin="hub-cache", spec_id=spec.id)
    token = os.environ.get("HF_TOKEN") or None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        if not _offline():
            # One HEAD request without retries first: hf_hub_download retries network errors with a 60 s timeout
            # and back-off (minutes against a silent or unresolvable host). Past this probe the Hub has answered,
            # and the download may take as long as the file needs.
            get_hf_file_metadata(
                hf_hub_url(spec.repo_id, spec.filename, repo_type=spec.repo_type, revision=spec.revision,
                           endpoint=endpoint),
                token=token, timeout=_HUB_TIMEOUT_S, endpoint=endpoint, retry_on_errors=False,
            )
        path = hf_hub_download(
            spec.repo_id,
            spec.filename,
            repo_type=spec.repo_type,
            revision=spec.revision,
            cache_dir=cache_dir,
            local_files_only=_offline(),
            token=token,
            etag_timeout=_HUB_TIMEOUT_S,
            endpoint=endpoint,
        )
    except Exception as exc:  # noqa: BLE001 - every Hub/network failure means the same thing to the caller
        where = f"{spec.repo_type} {spec.repo_id}/{spec.filename}@{(spec.revision or 'main')[:12]}"
        reason = "offline mode (HF_HUB_OFFLINE=1)" if _offline() else f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise WeightsUnavailableError(f"{spec.id}: cannot get {where}: {reason}") from exc
    return WeightsSource(path=Path(path), origin="hub", spec_id=spec.id)


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
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        try:
            return dict(load_safetensors(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from exc
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
        reason = detail.group(1) if detail else f"{type(exc).__name__}: {text.splitlines()[0][:120] if text else ''}"
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
    for wrapper in _WRAPPER_KEYS:
        inner = state.get(wrapper)
        if isinstance(inner, dict) and inner:
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if key_prefix:
        tensors = {k[len(key_prefix) :]: v for k, v in tensors.items() if k.startswith(key_prefix)}
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value

    expected = model.state_dict().keys()
    cleaned = {
        k: v for k, v in cleaned.items() if k in expected or not k.endswith(_NORM_STAT_SUFFIXES)
    }
    if set(cleaned) != set(expected):
        with_model = {f"model.{k}": v for k, v in cleaned.items()}
        without_model = {k.removeprefix("model."): v for k, v in cleaned.items()}
        for candidate in (with_model, without_model):
            if set(candidate) == set(expected):
                return candidate
    return cleaned


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


def load_generator_with_source(spec: ModelSpec) -> tuple[nn.Module, WeightsSource]:
    """Build `spec`'s network, load its weights strictly, return it in eval mode (fp32) with their source."""
    source = resolve_weights(spec)
    model = build_generator(spec)
    state = canonicalize_state_dict(read_state_dict(source.path), model=model, key_prefix=spec.key_prefix)
    load_state_dict_strict(model, state, source=f"{spec.id} ({source.path})")
    return model.float().eval(), source


def load_generator(spec: ModelSpec) -> nn.Module:
    """Build `spec`'s network, load its weights strictly and return it in eval mode, fp32."""
    return load_generator_with_source(spec)[0]


def load_with_fallback(spec: ModelSpec) -> LoadedModel:
    """Load `spec`; if its Hub file cannot be had and it names a bundled fallback, load that and say so."""
    try:
        module, source = load_generator_with_source(spec)
        return LoadedModel(spec=spec, module=module, source=source)
    except WeightsUnavailableError as exc:
        if spec.fallback is None:
            raise
        fallback = SPECS[spec.fallback]
        module, source = load_generator_with_source(fallback)
        note = f"Hub unreachable for {spec.id}; using the bundled {fallback.id} instead ({exc})"
        return LoadedModel(
            spec=fallback,
            module=module,
            source=WeightsSource(path=source.path, origin=source.origin, spec_id=fallback.id, note=note),
        )


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



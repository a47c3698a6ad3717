"""Reading weights: a leaf module (torch, safetensors and errors only) that every layer above shares.

- `read_state_dict`: a file into a dict without running pickled code (safetensors first, else
  `torch.load(weights_only=True)`),
- `unwrap_state_dict` / `canonicalize_state_dict`: the quirks of real checkpoints (wrappers, nesting,
  `module.` / `_orig_mod.` prefixes, InstanceNorm running statistics, a leading `model.`) in one place,
- `compare_keys`: the one comparison of a state dict with a network's keys and shapes (detection asks "does it
  fit?", the loader "why does it not?"),
- `top_level_groups` / `load_state_dict_strict` / `describe_keys`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import nn

from .errors import WeightsError, first_line

# Checkpoint wrappers seen in the wild, most specific first (Real-ESRGAN: params_ema / params; SRGAN-PyTorch and
# many training scripts: state_dict).
WRAPPER_KEYS = ("params_ema", "params", "state_dict")
PREFIXES = ("module.", "_orig_mod.")
NORM_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
# How torch.save files begin: a zip archive (PyTorch >= 1.6), else a pickle of protocol 2+ (the legacy format).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


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


def unwrap_state_dict(state: Mapping[str, Any], *, key_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The model-independent half of canonicalisation: tensors only, keyed as the network names them.

    Unwraps a `params_ema` / `params` / `state_dict` wrapper, flattens nested dicts (`{"netG_A": {...}}` becomes
    `netG_A.<key>`), keeps only `key_prefix` entries (prefix removed), strips `module.` / `_orig_mod.` prefixes.
    """
    for wrapper in WRAPPER_KEYS:
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
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def top_level_groups(state: Mapping[str, Any]) -> list[str]:
    """The first dotted parts of an unwrapped state dict's keys, sorted ("G_A", "G_B", "netD_A", ...)."""
    return sorted({k.split(".", 1)[0] for k in state if "." in k})


def canonicalize_state_dict(
    state: Mapping[str, Any], *, model: nn.Module, key_prefix: str | None = None
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
    kept = [{k: v for k, v in c.items() if k in expected or not k.endswith(NORM_STAT_SUFFIXES)} for c in candidates]
    return next((c for c in kept if set(c) == set(expected)), kept[0])


@dataclass(frozen=True)
class KeyMismatch:
    """How a state dict differs from a network's: keys it lacks, keys it has extra, and keys whose shapes differ
    (each entry "key: file (a, b) vs network (c, d)"). Falsy when the state dict loads strictly."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    wrong_shape: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def _labelled(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(label, items) for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                                                    ("wrong shape", self.wrong_shape)) if items]

    def brief(self) -> str:
        """'missing a (+3); wrong shape b: ...' : the first key of each kind, for a detection's near miss."""
        return "; ".join(f"{label} {items[0]}" + (f" (+{len(items) - 1})" if len(items) > 1 else "")
                         for label, items in self._labelled())

    def detailed(self, *, shown: int = 8) -> str:
        """'missing: a, b, ... (12 in all); unexpected: ...': up to `shown` keys of each kind, for a load error."""
        return "; ".join(f"{label}: " + ", ".join(items[:shown])
                         + (f", ... ({len(items)} in all)" if len(items) > shown else "")
                         for label, items in self._labelled())


def compare_keys(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> KeyMismatch:
    """The one comparison of a state dict with a network's (`expected`: `model.state_dict()`, meta tensors fine)."""
    return KeyMismatch(
        missing=tuple(sorted(set(expected) - set(state))),
        unexpected=tuple(sorted(set(state) - set(expected))),
        wrong_shape=tuple(f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
                          for k in sorted(set(state) & set(expected))
                          if tuple(state[k].shape) != tuple(expected[k].shape)),
    )


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """`load_state_dict(strict=True)` with an error that says which keys and shapes did not match.

    Raises:
        WeightsError: the keys or shapes differ; nothing was loaded.
    """
    expected = model.state_dict()
    mismatch = compare_keys(state, expected)
    if mismatch:
        raise WeightsError(f"{source}: does not match {type(model).__name__} (wrong architecture or variant?); "
                           + mismatch.detailed())
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def describe_keys(sd: Mapping[str, Any], *, shown: int = 3) -> str:
    """'12 tensors, first keys a, b, c' for messages."""
    keys = list(sd)
    return f"{len(keys)} tensors, first keys {', '.join(keys[:shown]) or '(none)'}"

"""Bounds on what a visitor controls, checked before work starts: option values of a custom id, and a weights file's
size, tensor count, key structure and declared parameters read from its HEADER before any tensor is materialised.

    limits.option_value("tile", "2000")      # UnknownModelError-ready ValueError: tile must be ... at most 1024
    limits.check_file(path)                  # UnsupportedModelError before read_state_dict on a hostile file
    limits.check_state(state_dict, where)    # the same bounds on a state dict read some other way
    limits.check_scale(scale, where)         # a detected network's upscale factor
    REFUSALS.check(digest) / REFUSALS.remember(digest, error)    # a refused file costs nothing the second time

Every number here is well above what published generators need (RRDBNet x4: 700 tensors, 16.7M parameters, a 60 KB
header, block index 22; SwinIR-L / HAT-L: under 3000 tensors) and far below what makes detection or building slow.
"""

from __future__ import annotations

import json
import math
import pickletools
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import GanModelsError, UnsupportedModelError

MAX_SCALE = 8  # upscale factor of a network (and of ?scale=)
MAX_MULTIPLE = 256  # ?multiple= (pix2pix U-Nets need 256)
MIN_TILE, MAX_TILE = 16, 1024  # ?tile=
MAX_RANGE = 65535.0  # |low|, |high| of ?range=
MAX_TENSORS = 8192
MAX_PARAMETERS = 250_000_000  # declared elements of all tensors (1 GB in fp32)
MAX_KEY_INDEX = 1024  # the largest number in a key: "body.20002.weight" declares 20003 blocks
MAX_LAYERS = 4096  # leaf modules of a built network (RRDBNet x4: 351)
MAX_KEY_DEPTH = 64  # dots in one key (pix2pix U-Net 8 levels: 20)
MAX_KEY_LENGTH = 1024
MAX_HEADER_BYTES = 8 * 2**20  # safetensors JSON header, or a torch zip's pickle (data.pkl)
REFUSALS_KEPT = 256
_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")


def option_value(name: str, raw: str) -> Any:
    """The value of option `name` (tile, multiple, scale, range, task) from its text, within bounds.

    Returns: tile -> int or None ("none"); multiple, scale -> int; range -> (low, high); task -> the text.

    Raises:
        ValueError: not a number, not finite, out of bounds or out of order; one sentence naming the option.
    """
    if name == "range":
        parts = raw.split(",")
        if len(parts) != 2:
            raise ValueError("range needs two numbers, low,high")
        low, high = (float(p) for p in parts)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("range values must be finite numbers")
        if max(abs(low), abs(high)) > MAX_RANGE:
            raise ValueError(f"range values must be within +-{MAX_RANGE:g}")
        if not low < high:
            raise ValueError("range needs low < high")
        return low, high
    if name == "tile":
        if raw.strip().lower() == "none":
            return None
        return _bounded_int(name, raw, MIN_TILE, MAX_TILE)
    if name == "multiple":
        return _bounded_int(name, raw, 1, MAX_MULTIPLE)
    if name == "scale":
        return _bounded_int(name, raw, 1, MAX_SCALE)
    return raw


def _bounded_int(name: str, raw: str, low: int, high: int) -> int:
    value = int(raw)  # ValueError for "2.5", "1e9", "inf"
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def check_scale(scale: int, where: str) -> None:
    """Refuse a network whose upscale factor is over MAX_SCALE (an x64 net turns 100 px into 6400 px)."""
    if scale > MAX_SCALE:
        raise UnsupportedModelError(f"{where}: an x{scale} network is over this server's limit of x{MAX_SCALE}")


def check_keys(keys: Iterable[str], where: str) -> None:
    """Tensor count, key length and depth, and the largest block index a file's keys declare."""
    count = 0
    for key in keys:
        count += 1
        if count > MAX_TENSORS:
            raise UnsupportedModelError(f"{where}: more than {MAX_TENSORS} tensors; this server's limit is "
                                        f"{MAX_TENSORS}")
        if len(key) > MAX_KEY_LENGTH or key.count(".") > MAX_KEY_DEPTH:
            raise UnsupportedModelError(f"{where}: a key longer than {MAX_KEY_LENGTH} characters or nested deeper "
                                        f"than {MAX_KEY_DEPTH} levels ({key[:60]}...)")
        index = max((int(m) for m in _INDEX.findall(key)), default=0)
        if index > MAX_KEY_INDEX:
            raise UnsupportedModelError(f"{where}: key {key[:80]!r} declares block {index}; this server builds "
                                        f"networks of up to {MAX_KEY_INDEX} blocks per stage")


def check_parameters(count: int, where: str) -> None:
    if count > MAX_PARAMETERS:
        raise UnsupportedModelError(f"{where}: declares {count / 1e6:.0f}M parameters, over this server's limit of "
                                    f"{MAX_PARAMETERS / 1e6:.0f}M")


def check_state(state: Mapping[str, Any], where: str) -> None:
    """The header bounds on a state dict already read (formats whose header is not checked by `check_file`)."""
    check_keys((str(k) for k in state), where)
    check_parameters(sum(int(getattr(v, "numel", lambda: 0)()) for v in state.values()), where)


def check_file(path: str | Path, where: str | None = None) -> None:
    """Bounds read from the header of a safetensors file or a torch zip checkpoint, before any tensor is read.

    Other formats (the legacy torch pickle) are bounded by their file size here and by `check_state` after reading.

    Raises:
        UnsupportedModelError: header too large, too many tensors, a key declaring an absurd block count, too many
            parameters; `where` (default: the file's name) names the file.
        GanModelsError: the file cannot be read at all.
    """
    path = Path(path)
    where = where or path.name
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) == 8 and f.read(1) == b"{":
                _check_safetensors(f, int.from_bytes(head, "little"), where)
                return
    except OSError as exc:
        raise GanModelsError(f"{where}: cannot be read ({exc.strerror})") from None
    if zipfile.is_zipfile(path):
        _check_torch_zip(path, where)


def _check_safetensors(f: Any, length: int, where: str) -> None:
    if length > MAX_HEADER_BYTES:
        raise UnsupportedModelError(f"{where}: a safetensors header of {length / 2**20:.1f} MB; this server reads "
                                    f"headers of up to {MAX_HEADER_BYTES // 2**20} MB")
    f.seek(8)
    try:
        header = json.loads(f.read(length))
    except (ValueError, RecursionError):
        return  # not valid: read_state_dict says so in its words
    if not isinstance(header, dict):
        return
    entries = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    check_keys(entries, where)
    check_parameters(sum(math.prod(v.get("shape") or [0]) for v in entries.values()
                         if all(isinstance(d, int) for d in v.get("shape") or [])), where)


def _check_torch_zip(path: Path, where: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_TENSORS + 16:  # one entry per storage, plus data.pkl, version, byteorder, ...
                raise UnsupportedModelError(f"{where}: holds {len(infos)} storages; this server's limit is "
                                            f"{MAX_TENSORS} tensors")
            pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1:
                return
            if pickles[0].file_size > MAX_HEADER_BYTES:
                raise UnsupportedModelError(f"{where}: its pickle is {pickles[0].file_size / 2**20:.1f} MB; this "
                                            f"server reads checkpoints whose structure is up to "
                                            f"{MAX_HEADER_BYTES // 2**20} MB")
            data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # read_state_dict reports the corruption
    check_keys(_pickled_keys(data), where)


def _pickled_keys(data: bytes) -> list[str]:
    """The dotted strings of a checkpoint's pickle (its state-dict keys), read opcode by opcode: nothing is built."""
    keys: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE") and "." in str(arg):
                keys.append(str(arg))
    except (ValueError, EOFError):
        pass  # a truncated or odd pickle: the safe unpickler refuses it with its own message
    return keys


class RefusalMemory:
    """Files refused before, by sha256 of their bytes (bounded LRU): a second upload of one is refused at once."""

    def __init__(self, kept: int = REFUSALS_KEPT) -> None:
        self._kept = kept
        self._refused: OrderedDict[str, tuple[type[GanModelsError], str]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, digest: str, where: str) -> None:
        """Raise the remembered refusal of the file with this sha256, if any, naming it `where` (the same bytes may
        come back under another name, from another visitor: the first one's name is not repeated)."""
        with self._lock:
            remembered = self._refused.get(digest)
            if remembered is not None:
                self._refused.move_to_end(digest)
        if remembered is not None:
            kind, reason = remembered
            raise kind(f"{where}: {reason} (refused before)")

    def remember(self, digest: str, where: str, error: GanModelsError) -> None:
        text = str(error)
        reason = text[len(where) + 2:] if text.startswith(f"{where}: ") else text
        with self._lock:
            self._refused[digest] = (type(error), reason)
            self._refused.move_to_end(digest)
            while len(self._refused) > self._kept:
                self._refused.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._refused.clear()


REFUSALS = RefusalMemory()

__all__ = ["MAX_SCALE", "MAX_TENSORS", "REFUSALS", "RefusalMemory", "check_file", "check_keys", "check_parameters",
           "check_scale", "check_state", "option_value"]

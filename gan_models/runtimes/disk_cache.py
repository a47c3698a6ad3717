"""The ONNX cache on disk: folder names that say nothing about where a file came from, and a size cap.

A curated model's folder is its id (`default-upscale-x4`). A custom model named by a path (a visitor's upload sits in
a temporary folder) or by a Hub id with options gets `<file name>-<16 hex>`: the hex is the sha256 of its weights
file's bytes (when it is a local file) and of what the spec says about the network, so the same weights under
another temporary path share one folder, and no folder is named after a server path.

`prune(root, max_bytes)` deletes least recently used model folders (their mtime: `touch` marks a use) until the cache
fits, never the folder named in `keep`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from ..files import sha256_file
from ..specs import ModelSpec

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def folder_name(spec: ModelSpec) -> str:
    """The cache folder of `spec` (module docstring)."""
    if _SAFE.match(spec.id):
        return spec.id
    h = hashlib.sha256()
    if spec.bundled is not None and Path(spec.bundled).is_file():
        st = Path(spec.bundled).stat()
        h.update(_file_sha256(str(spec.bundled), st.st_size, st.st_mtime_ns).encode())
    else:
        h.update(repr(spec.sources).encode())
    h.update(json.dumps([spec.task, spec.arch, dict(spec.arch_kwargs), list(spec.value_range), spec.scale,
                         spec.size_multiple, spec.tile, spec.key_prefix], sort_keys=True, default=str).encode())
    stem = spec.id.partition("?")[0].partition("#")[0].rstrip("/").rsplit("/", 1)[-1]
    return f"{safe_name(stem)[:40]}-{h.hexdigest()[:16]}"


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    return sha256_file(path)


def touch(folder: Path) -> None:
    """Mark `folder` as just used (its mtime), for `prune`."""
    try:
        os.utime(folder)
    except OSError:
        pass


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prune(root: Path, max_bytes: int, *, keep: Path | None = None) -> list[str]:
    """Delete least recently used model folders under `root` until their total size is at most `max_bytes`;
    returns the names deleted. `keep` (the folder just used) is never deleted."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    sizes = {p: _size(p) for p in folders}
    total = sum(sizes.values())
    deleted: list[str] = []
    for folder in folders:
        if total <= max_bytes:
            break
        if keep is not None and folder.resolve() == Path(keep).resolve():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        deleted.append(folder.name)
    if deleted:
        logger.info("ONNX cache over %d MB: pruned %s", max_bytes // 2**20, ", ".join(deleted))
    return deleted


__all__ = ["folder_name", "prune", "safe_name", "touch"]

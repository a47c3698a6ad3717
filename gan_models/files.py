"""File helpers: atomic writes (results, weights, checkpoints and sidecars are complete or absent) and sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file in `path`'s folder for the block to write; renamed to `path` when the block ends normally.

    The file gets mode 0644 (mkstemp makes 0600; what we write is meant to be shared). On any error, or when a
    generator holding the block is closed early (GeneratorExit), the temporary file is removed and `path` is left
    as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` on a temporary file in `path`'s folder, then rename it to `path`; returns `path`
    (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)

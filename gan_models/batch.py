"""One file of a batch run, shared by the engines of `python -m gan_models run` (the local loop in cli.py and
gan_models.engines.ray): output names, translate + write with the same skip reasons, and the closing report."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import GanModelsError
from .imaging import IMAGE_SUFFIXES

# Write errors that end the whole batch: every later file would fail the same way.
FATAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS})
OVERWRITE_REASON = "output would overwrite the input; choose another -o or --suffix"


def iter_images(inputs: Sequence[Path], suffixes: frozenset[str] = IMAGE_SUFFIXES) -> Iterator[Path]:
    """Files as given, folders searched recursively for files with these suffixes, in a stable order, each once."""
    seen: set[Path] = set()
    for item in inputs:
        candidates = (sorted(p for p in item.rglob("*") if p.suffix.lower() in suffixes) if item.is_dir()
                      else [item])
        for path in candidates:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                yield path


@dataclass(frozen=True)
class FileResult:
    """What became of one input: written, or skipped with a reason; `fatal` (a write error's strerror) stops the
    batch."""

    written: bool
    reason: str | None = None
    notes: tuple[str, ...] = ()
    fatal: str | None = None


def output_suffix(suffix: str | None, model_id: str) -> str:
    """--suffix, or `_MODEL` from the id of the model that runs (a fallback's id when one stands in)."""
    from .custom import file_safe_name

    return suffix if suffix is not None else f"_{file_safe_name(model_id)}"


def output_name(stem: str, suffix: str) -> str:
    return f"{stem}{suffix}.png"


def translate_file(work: Callable[[], Sequence[str]]) -> FileResult:
    """Run `work` (translate one file and write its result; returns the notes for the user): library and per-file
    OS errors become a skip reason, a full or read-only disk a fatal stop."""
    try:
        return FileResult(True, notes=tuple(work()))
    except GanModelsError as exc:
        return FileResult(False, str(exc))
    except OSError as exc:
        if exc.errno in FATAL_WRITE_ERRORS:
            return FileResult(False, fatal=exc.strerror or str(exc))
        return FileResult(False, f"{type(exc).__name__}: {exc}")


def report(notes: Sequence[tuple[object, str]], failures: Sequence[tuple[object, str]], written: int,
           out: object) -> int:
    """The closing lines on stderr (notes, `skipped PATH: reason`, the count); the exit code: 1 when any failed."""
    for path, note in notes:
        print(f"note: {path}: {note}", file=sys.stderr)
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{written} written to {out}, {len(failures)} skipped", file=sys.stderr)
    return 1 if failures else 0

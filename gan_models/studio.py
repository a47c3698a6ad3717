"""What a front door needs around a model run that is not UI: result files, info lines, the /models rows.

    files = ResultFiles()
    path = files.write(result, "photo_x4")                            # unique name, atomic, old files pruned
    line = info_line(translator.pinned(), seconds, result, requested="realesrgan-x4")
    rows = model_rows(cache)                                          # /models: offered, then custom tried lately

No gradio here: the app maps these to components and library errors to gr.Error.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from . import imaging
from .cache import ModelCache
from .custom import SWITCH as CUSTOM_SWITCH
from .errors import GanModelsError, first_line
from .pipeline import Translator
from .runtimes import default_backend, resolve_device
from .settings import Settings, hub_cache_dir, hub_offline, user_cache_dir
from .specs import ModelSpec

ORIGINS = {
    "bundled": "bundled with the app",
    "local": "local file",
    "hub-cache": "Hugging Face cache",
    "hub": "downloaded from the Hugging Face Hub",
}
RESULT_FILES_KEPT_S = 3600  # a result file only has to outlive the server's own copy for the browser


def shown(model_id: str) -> str:
    """A model id as users see it: an uploaded file by its name, not the server's temporary path."""
    return Path(model_id).name if Path(model_id).is_absolute() else model_id


def default_model(specs: dict[str, ModelSpec], task: str, *, device: str) -> str | None:
    """The model a task starts on: the first offered; on a CPU a bundled one first."""
    ids = [spec.id for spec in specs.values() if spec.task == task]
    if task == "upscale" and device != "cuda":
        # RRDBNet x4 takes minutes per megapixel on a CPU; the compact bundled model takes seconds.
        bundled = [i for i in ids if specs[i].is_bundled]
        ids = bundled + [i for i in ids if i not in bundled]
    return ids[0] if ids else None


class ResultFiles:
    """Results saved as uniquely named PNG files (and videos as MP4s) atomically in a private temporary folder.

    Handlers return images as these files, not as PIL images: Gradio saves a PIL output under a name derived from
    its content and rewrites that file in place, so two requests with the same result (the same example clicked
    twice) could serve each other a half-written file. A file path is copied into Gradio's cache atomically instead.
    Files older than RESULT_FILES_KEPT_S are deleted on the next write.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._lock = threading.Lock()

    def write(self, img: Image.Image, stem: str) -> str:
        return str(imaging.save_png(img, self.path(stem, ".png")))

    def path(self, stem: str, suffix: str) -> Path:
        """A new unique path in the folder for a result the caller writes (atomically): a PNG, a video's MP4."""
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="gan-studio-"))
            cutoff = time.time() - RESULT_FILES_KEPT_S
            for old in self._dir.iterdir():
                if old.suffix in (".png", ".mp4") and old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "image"
        return self._dir / f"{safe}-{uuid.uuid4().hex[:12]}{suffix}"


def info_line(translator: Translator, seconds: float, result: Image.Image, *, requested: str) -> str:
    """The line under a result: model, the backend it ran on, device, time, size, where the weights came from,
    a fallback or stand-in warning and what happened to the input on the way.

    Parameters:
        translator: the request's translator, pinned (`Translator.pinned`): its backend is the one that ran.
        requested: the id the request asked for.
    """
    spec, source, backend = translator.spec, translator.source, translator.backend
    size = result.size
    origin = ORIGINS.get(source.origin, source.origin) if source is not None else "unknown"
    if source is not None and source.hub is not None:
        origin += f" ({source.hub.repo_id})"
    # int8/fp16 trade a little accuracy (>= 40 dB PSNR vs fp32, checked at export): say so
    runtime = backend.name if backend.precision == "fp32" else f"{backend.name} {backend.precision}"
    line = (f"**{spec.title}** (`{shown(spec.id)}`) · {runtime} on {backend.device} · {seconds:.2f} s · "
            f"{size[0]}×{size[1]} px · weights: {origin}")
    if translator.fallback_reason is not None:
        line += f"\n\n⚠️ {translator.fallback_reason}"
    elif requested != spec.id:
        line += f"\n\n⚠️ {requested} is served by {spec.id}"
    notes = imaging.image_notes(result)
    if notes:  # what happened to the input on the way: first frame of an animation, CMYK converted, ...
        line += "\n\nℹ️ " + "; ".join(notes)
    return line


def model_row(spec: ModelSpec, available: bool, status: str, *, custom: bool) -> dict[str, Any]:
    """One /models row."""
    return {
        "id": shown(spec.id),
        "title": spec.title,
        "task": spec.task,
        "custom": custom,
        # custom specs describe themselves as "<detected family>: <numbers read from the file>"
        "family": spec.description.partition(": ")[0] if custom else None,
        "arch": spec.arch,
        "bundled": spec.is_bundled,
        "available": available,
        "status": status,
        "hub_repo": spec.repo_id,
        "hub_file": spec.filename,
        "revision": spec.revision,
        "fallback": spec.fallback,
        "scale": spec.scale,
        "input_size": spec.input_size,
        "licence": spec.licence,
    }


def model_rows(cache: ModelCache) -> list[dict[str, Any]]:
    """Every offered model, then the custom ids tried lately; nothing is loaded. A custom id that could not be
    resolved has only its id, "available": false and the reason."""
    rows = [model_row(spec, *cache.status(spec), custom=False) for spec in cache.specs.values()]
    for model_id, spec in cache.custom_specs():
        if isinstance(spec, ModelSpec):
            rows.append(model_row(spec, *cache.status(spec), custom=True))
        else:
            rows.append({"id": shown(model_id), "custom": True, "available": False,
                         "status": f"unavailable: {first_line(spec)}"})
    return rows


def models_table(rows: list[dict[str, Any]] | None) -> str:
    """Markdown table of the /models rows."""
    lines = ["| model | task | weights | status |", "|---|---|---|---|"]
    for row in rows or []:
        if "title" not in row:  # a custom id that could not be resolved
            lines.append(f"| custom: `{row['id']}` | | | {row['status']} |")
            continue
        where = "bundled" if row["bundled"] else f"Hub: `{row['hub_repo']}`" if row["hub_repo"] else "local file"
        if row["custom"]:
            where = f"custom, {row['family']} · {where}"
        lines.append(f"| {row['title']} (`{row['id']}`) | {row['task']} | {where} | {row['status']} |")
    return "\n".join(lines)


def runtime_summary(config: Settings, specs: dict[str, ModelSpec], *, upload_mb: int) -> str:
    """Backend, device, Hub, concurrency, cache and custom-model settings in use, as one Markdown line.

    Parameters:
        upload_mb: the largest weights upload accepted (the front door's upload cap decides).
    """
    try:
        device = resolve_device(config.device)
    except GanModelsError as exc:
        device = f"unavailable ({exc})"
    backends = sorted({default_backend(s) if config.backend == "auto" else config.backend for s in specs.values()})
    hub = ("offline (HF_HUB_OFFLINE=1): bundled models only" if hub_offline()
           else "online: Hub models download on first use")
    caches = f"Hub `{hub_cache_dir()}` · ONNX `{config.onnx_cache or user_cache_dir() / 'onnx'}`"
    custom = (f"on (Hub ids and uploads up to {upload_mb} MB; downloads up to {config.max_weights_mb} MB)"
              if config.custom_models else f"off ({CUSTOM_SWITCH}=0)")
    return (f"**Backend:** {config.backend} → {', '.join(backends)} · **Device:** {config.device} → "
            f"{device} · **Hub:** {hub} · **Model runs at once:** {config.concurrency} · "
            f"**Models kept loaded:** {config.max_models} · **Custom models:** {custom} · "
            f"**Caches:** {caches}")

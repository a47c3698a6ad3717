"""The one module that reads environment variables, like diffusers' `utils/constants.py`, through one table:
`ENV` maps each field to its variable (grep a variable's name here to find what reads it).

Library functions take explicit arguments; front doors (app, CLI, train.py, bench) build a `Settings` with
`Settings.from_env()` once and pass its fields down. A few are read at call time through the functions at the end
(Hugging Face's own HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT, HF_HOME, HF_HUB_CACHE; SPACES_ZERO_GPU; a backend or
ONNX cache forced for the whole process), because tests and a Space's start-up change them after import.

Old names still work for a while and warn once: GAN_MODELS_TILE_BUDGET_MB → GAN_STUDIO_TILE_BUDGET_MB.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GanModelsError

# The one table from field to environment variable: every variable the studio reads, and only here. Settings fields
# first (read once by `Settings.from_env`), then those read at call time (Hugging Face's own, the Space's ZeroGPU
# flag, the user cache) because tests and a Space's start-up change them after import.
ENV: dict[str, str] = {
    "backend": "GAN_STUDIO_BACKEND",
    "device": "GAN_STUDIO_DEVICE",
    "concurrency": "GAN_STUDIO_CONCURRENCY",
    "queue_size": "GAN_STUDIO_QUEUE_SIZE",
    "max_file_size": "GAN_STUDIO_MAX_FILE_SIZE",
    "max_input_pixels": "GAN_STUDIO_MAX_PIXELS",
    "max_upscale_pixels": "GAN_STUDIO_MAX_UPSCALE_PIXELS",
    "max_style_side": "GAN_STUDIO_MAX_SIDE",
    "preview_side": "GAN_STUDIO_PREVIEW_SIDE",
    "retry_after_s": "GAN_STUDIO_RETRY_AFTER_S",
    "threads": "GAN_STUDIO_THREADS",
    "mcp": "GRADIO_MCP_SERVER",
    "tile_budget_mb": "GAN_STUDIO_TILE_BUDGET_MB",
    "onnx_cache": "GAN_STUDIO_ONNX_CACHE",
    "max_weights_mb": "GAN_STUDIO_MAX_WEIGHTS_MB",
    "max_models": "GAN_STUDIO_MAX_MODELS",
    "custom_models": "GAN_STUDIO_CUSTOM_MODELS",
    "max_video_seconds": "GAN_STUDIO_MAX_VIDEO_SECONDS",
    "url_hosts": "GAN_STUDIO_URL_HOSTS",
    "zero_gpu": "SPACES_ZERO_GPU",
    "hub_offline": "HF_HUB_OFFLINE",
    "hub_token": "HF_TOKEN",
    "hub_endpoint": "HF_ENDPOINT",
    "hub_cache": "HF_HUB_CACHE",
    "hf_home": "HF_HOME",
    "xdg_cache_home": "XDG_CACHE_HOME",
}
TRUTHY = frozenset({"1", "true", "yes", "on"})
FALSY = frozenset({"0", "false", "no", "off"})
# old name -> current name; the old one is read (with a DeprecationWarning) only when the new one is unset
DEPRECATED_NAMES: dict[str, str] = {"GAN_MODELS_TILE_BUDGET_MB": "GAN_STUDIO_TILE_BUDGET_MB"}
# Hosts a weights URL may point to (and redirect through): GitHub releases (github.com redirects release assets to
# objects.githubusercontent.com, lately to release-assets.githubusercontent.com) and the Hub (huggingface.co; its
# LFS files redirect to cdn-lfs.huggingface.co and *.hf.co). An entry covers its subdomains.
DEFAULT_URL_HOSTS: tuple[str, ...] = ("github.com", "objects.githubusercontent.com",
                                      "release-assets.githubusercontent.com", "huggingface.co", "hf.co")


def is_truthy(value: str | None) -> bool:
    """"1", "true", "yes", "on" (any case, spaces ignored) → True; anything else → False."""
    return (value or "").strip().lower() in TRUTHY


def process_environ() -> MutableMapping[str, str]:
    """This process's environment, for the few front-door helpers that set variables (deploy's storage setup)."""
    return os.environ


def env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The raw value of `name` (a value of ENV), or of its deprecated old name (with a DeprecationWarning); None
    when unset/empty."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value not in (None, ""):
        return value
    for old, new in DEPRECATED_NAMES.items():
        if new == name and environ.get(old) not in (None, ""):
            warnings.warn(f"{old} is deprecated; set {new} instead", DeprecationWarning, stacklevel=2)
            return environ[old]
    return None


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUTHY:
        return True
    if value in FALSY:
        return False
    raise ValueError(f"expected one of {sorted(TRUTHY | FALSY)}")


def _hosts(raw: str) -> tuple[str, ...]:
    if raw.lower() == "none":
        return ()
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    if bad := [h for h in hosts if not re.fullmatch(r"[a-z0-9.-]+", h)]:
        raise ValueError(f"not host names: {', '.join(bad)} (e.g. github.com,huggingface.co, or none)")
    return hosts


def _default_threads(concurrency: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


@dataclass(frozen=True)
class Settings:
    """How the studio runs; every field has a GAN_STUDIO_* variable so a Space needs no code change.

    Parameters:
        backend: "auto", "torch" or "onnx" (GAN_STUDIO_BACKEND).
        device: "auto", "cpu" or "cuda" (GAN_STUDIO_DEVICE); "auto" uses CUDA when present.
        concurrency: model runs at once across all tabs (GAN_STUDIO_CONCURRENCY); more than the CPU cores
            only makes every request slower.
        queue_size: waiting requests before new ones are refused (GAN_STUDIO_QUEUE_SIZE).
        max_file_size: upload cap passed to launch(), for images and weights files alike (GAN_STUDIO_MAX_FILE_SIZE,
            e.g. "25mb"); the default lets common generator files through (pix2pix 218 MB, Real-ESRGAN 67 MB), and
            decoded images stay bounded by the pixel limits below.
        max_input_pixels: decoded-size guard for style and sketch inputs (GAN_STUDIO_MAX_PIXELS).
        max_upscale_pixels: input cap for upscaling: the x4 result has 16x as many pixels
            (GAN_STUDIO_MAX_UPSCALE_PIXELS).
        max_style_side: "original size" style transfer shrinks the long side to this (GAN_STUDIO_MAX_SIDE).
        preview_side: long side of the before/after preview; the PNG download is always full size
            (GAN_STUDIO_PREVIEW_SIDE).
        retry_after_s: how long a Hub failure or a broken model is remembered before trying again
            (GAN_STUDIO_RETRY_AFTER_S).
        threads: CPU threads per model run, set once at start-up by the entry point (GAN_STUDIO_THREADS);
            0 leaves torch's default.
        mcp: serve the MCP endpoint (GRADIO_MCP_SERVER, Gradio's own name).
        tile_budget_mb: working memory for automatic tiling on CPU (GAN_STUDIO_TILE_BUDGET_MB).
        onnx_cache: folder of exported ONNX files (GAN_STUDIO_ONNX_CACHE); None: ~/.cache/gan-studio/onnx
            (or $XDG_CACHE_HOME/gan-studio/onnx).
        max_weights_mb: largest weights file a custom model may download (GAN_STUDIO_MAX_WEIGHTS_MB).
        max_models: loaded models kept in memory at once, least recently used dropped first
            (GAN_STUDIO_MAX_MODELS).
        custom_models: whether users may load models by Hub id, URL, path or upload (GAN_STUDIO_CUSTOM_MODELS).
        url_hosts: hosts a custom model's https URL may name or redirect to (GAN_STUDIO_URL_HOSTS, comma-separated;
            "none" refuses every URL); see gan_models.urlfetch.
        zero_gpu: the Space says it runs on ZeroGPU (SPACES_ZERO_GPU; `zerogpu.active` asks the `spaces`
            package first).
        max_video_seconds: longest video clip the Video tab and the CLI take (GAN_STUDIO_MAX_VIDEO_SECONDS).
    """

    backend: str = "auto"
    device: str = "auto"
    concurrency: int = 2
    queue_size: int = 32
    max_file_size: str = "256mb"
    max_input_pixels: int = 50_000_000
    max_upscale_pixels: int = 4_000_000
    max_style_side: int = 1024
    preview_side: int = 2048
    retry_after_s: float = 600.0
    threads: int = 0
    mcp: bool = False
    tile_budget_mb: int = 1536
    onnx_cache: Path | None = None
    max_weights_mb: int = 500
    max_models: int = 6
    custom_models: bool = True
    url_hosts: tuple[str, ...] = DEFAULT_URL_HOSTS
    zero_gpu: bool = False
    max_video_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every GAN_STUDIO_* variable (unset or empty → the default).

        Raises:
            GanModelsError: a value of the wrong kind; the message names the variable and the value.
        """
        environ = os.environ if environ is None else environ

        def get(field: str, kind: Callable[[str], Any] = str, *, default: Any = None) -> Any:
            name = ENV[field]
            raw = env(name, environ)
            if raw is None:
                return getattr(cls, field) if default is None else default
            try:
                return kind(raw.strip())
            except ValueError as exc:
                raise GanModelsError(f"{name}={raw!r}: {exc}") from None

        concurrency = get("concurrency", int)
        return cls(
            backend=get("backend").lower(),
            device=get("device").lower(),
            concurrency=concurrency,
            queue_size=get("queue_size", int),
            max_file_size=get("max_file_size"),
            max_input_pixels=get("max_input_pixels", int),
            max_upscale_pixels=get("max_upscale_pixels", int),
            max_style_side=get("max_style_side", int),
            preview_side=get("preview_side", int),
            retry_after_s=get("retry_after_s", float),
            threads=get("threads", int, default=_default_threads(concurrency)),
            mcp=is_truthy(environ.get(ENV["mcp"])),
            tile_budget_mb=get("tile_budget_mb", int),
            onnx_cache=get("onnx_cache", lambda v: Path(v).expanduser()),
            max_weights_mb=get("max_weights_mb", int),
            max_models=max(1, get("max_models", int)),
            custom_models=get("custom_models", _flag),
            url_hosts=get("url_hosts", _hosts),
            zero_gpu=is_truthy(environ.get(ENV["zero_gpu"])),
            max_video_seconds=get("max_video_seconds", float),
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# --- read at call time (tests and a Space's start-up change them after import) -------------------------------------


def forced_backend(environ: Mapping[str, str] | None = None) -> str | None:
    """GAN_STUDIO_BACKEND as set now (lower case), or None: a backend forced for the whole process (test runs)."""
    raw = env(ENV["backend"], environ)
    return raw.strip().lower() if raw is not None else None


def onnx_cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """GAN_STUDIO_ONNX_CACHE as set now, or None."""
    raw = env(ENV["onnx_cache"], environ)
    return Path(raw).expanduser() if raw is not None else None


def zero_gpu(environ: Mapping[str, str] | None = None) -> bool:
    """SPACES_ZERO_GPU is set to a true value."""
    return is_truthy((os.environ if environ is None else environ).get(ENV["zero_gpu"]))


def hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    """HF_HUB_OFFLINE is set to a true value."""
    return is_truthy((os.environ if environ is None else environ).get(ENV["hub_offline"]))


def hub_token() -> str | None:
    return os.environ.get(ENV["hub_token"]) or None


def hub_endpoint() -> str | None:
    return os.environ.get(ENV["hub_endpoint"]) or None


def hub_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, read at call time (not import time)."""
    environ = os.environ if environ is None else environ
    if cache := environ.get(ENV["hub_cache"]):
        return Path(cache)
    home = environ.get(ENV["hf_home"]) or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/gan-studio, else ~/.cache/gan-studio: where the studio keeps what it builds (ONNX files)."""
    base = os.environ.get(ENV["xdg_cache_home"]) or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gan-studio"

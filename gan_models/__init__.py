"""gan_models: pretrained GAN generators for style transfer, sketch to photo and 4x upscaling.

    >>> from gan_models import SPECS, translator_for
    >>> translator = translator_for("default-upscale-x4")
    >>> result = translator("photo.png")          # PIL image, exactly 4x the input size
"""

from __future__ import annotations

from .cache import ModelCache
from .errors import (
    BackendUnavailableError,
    GanModelsError,
    ImageTooLargeError,
    InvalidImageError,
    OnnxExportError,
    UnknownModelError,
    WeightsError,
    WeightsUnavailableError,
)
from .pipeline import Translator, build_translator, translator_for
from .runtimes import Backend, BackendOutOfMemory, OnnxBackend, TorchBackend, default_backend, warm
from .settings import Settings
from .specs import SPECS, TASKS, HubFile, ModelSpec, get_spec, spec_from_config, specs_for_task
from .weights import (
    LoadedModel,
    WeightsSource,
    load_generator,
    load_generator_with_source,
    load_model,
    load_with_fallback,
    resolve_weights,
    save_model_folder,
)

__all__ = [
    "SPECS",
    "TASKS",
    "Backend",
    "BackendOutOfMemory",
    "BackendUnavailableError",
    "GanModelsError",
    "HubFile",
    "ImageTooLargeError",
    "InvalidImageError",
    "LoadedModel",
    "ModelCache",
    "ModelSpec",
    "OnnxBackend",
    "OnnxExportError",
    "Settings",
    "TorchBackend",
    "Translator",
    "UnknownModelError",
    "WeightsError",
    "WeightsSource",
    "WeightsUnavailableError",
    "build_translator",
    "default_backend",
    "get_spec",
    "load_generator",
    "load_generator_with_source",
    "load_model",
    "load_with_fallback",
    "resolve_weights",
    "save_model_folder",
    "spec_from_config",
    "specs_for_task",
    "translator_for",
    "warm",
]

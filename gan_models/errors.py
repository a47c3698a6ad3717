"""Typed exceptions of the library. Only front doors (app, CLI) turn them into user messages."""

from __future__ import annotations


class GanModelsError(Exception):
    """Base of every error this library raises on purpose."""


class UnknownModelError(GanModelsError, KeyError):
    """A model id that is not in SPECS (the message lists the valid ids)."""

    def __str__(self) -> str:  # KeyError would repr() the message with quotes
        return str(self.args[0]) if self.args else ""


class InvalidImageError(GanModelsError, ValueError):
    """An image that cannot be read or used: corrupt, empty, unsupported mode, too small."""


class ImageTooLargeError(InvalidImageError):
    """An image over the pixel limit (decompression-bomb guard)."""


class InvalidTileError(GanModelsError, ValueError):
    """A tile size that is not "auto", none/0 or a positive number of pixels."""


class InvalidVideoError(GanModelsError, ValueError):
    """A video that cannot be read or used: corrupt, no video stream, a still image, no frames, a codec we cannot
    decode, or over the limits (length, frame size, file size)."""


class WeightsUnavailableError(GanModelsError):
    """The weights file cannot be obtained: Hub unreachable and nothing cached or bundled."""


class HubUnreachableError(WeightsUnavailableError):
    """The Hub did not answer (offline mode, DNS failure, timeout, refused connection): other files on it would
    fail the same way."""


class HubRefusedError(WeightsUnavailableError):
    """The Hub answered but will not give the file (no such repo, file or revision; gated; private): another
    location on it may still work."""


class WeightsError(GanModelsError):
    """A weights file exists but cannot be used: corrupt, unsafe pickle, or keys that do not match the network."""


class UnsupportedModelError(WeightsError):
    """A checkpoint whose network we do not recognise, or a custom model id we will not load (too large, several
    generators and none chosen, custom models switched off); the message says what was found and the choices."""


class WeightsTooLargeError(UnsupportedModelError):
    """A custom weights file over the server's size cap (Settings.max_weights_mb)."""


class UnrecognisedNetworkError(UnsupportedModelError):
    """No architecture we or spandrel know matches these keys at all (as opposed to a known one whose numbers do
    not fit, which is a plain UnsupportedModelError naming the near miss)."""


class NotAModelConfigError(GanModelsError):
    """A config.json that is not a gan_models model config (another library's): detect from the weights instead."""


class BackendUnavailableError(GanModelsError):
    """A backend that cannot run here: onnxruntime not installed, no CUDA provider, an unknown precision."""


class BackendOutOfMemory(GanModelsError):
    """The accelerator ran out of memory on this input; `tiling.run_array` retries with smaller tiles."""


class OnnxExportError(GanModelsError):
    """Exporting a model to ONNX failed: the exporter, `onnx.checker`, quantization, or the parity check against
    PyTorch (the message gives the measured difference and the tolerance)."""


def first_line(exc: BaseException, *, limit: int = 300) -> str:
    """The first non-empty line of `exc`'s message (at most `limit` characters), else its type name.

    Third-party errors (onnxruntime, torch, the Hub client) carry multi-line messages and tracebacks; a user sees
    one line.
    """
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__

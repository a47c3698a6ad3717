"""ONNX export of any spec with a parity check against PyTorch: see export/onnx_export.py and `python -m export -h`."""

from __future__ import annotations

from .onnx_export import (
    FORMAT,
    MIN_PSNR_DB,
    OPSET,
    PRECISIONS,
    Exported,
    cache_dir,
    check_precision,
    choose_precision,
    export_model,
    onnx_path_for,
)

__all__ = [
    "FORMAT",
    "MIN_PSNR_DB",
    "OPSET",
    "PRECISIONS",
    "Exported",
    "cache_dir",
    "check_precision",
    "choose_precision",
    "export_model",
    "onnx_path_for",
]

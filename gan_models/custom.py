"""Models users name themselves (a Hub repo or file, an https URL, a local file or folder), with the curated ids in
messages.

A thin layer: the id syntax is parsed and printed in `refs`, resolved (fetched, size-checked, read once, detected,
cached) in `resolve`; this module adds what needs the catalogue (`specs.SPECS`, named in messages) and keeps the
names the app and older code import from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import refs, resolve
from .modelspec import ModelSpec
from .refs import OPTIONS, WEIGHTS_SUFFIXES, ModelRef, file_safe_name
from .resolve import CACHE_SIZE, clear_cache
from .settings import DEFAULT_URL_HOSTS, ENV
from .specs import SPECS

SWITCH = ENV["custom_models"]


def parse_model_ref(text: str, *, allow_local: bool = True) -> ModelRef:
    """`refs.parse_model_ref`, its message naming the curated ids."""
    return refs.parse_model_ref(text, allow_local=allow_local, known=SPECS)


def resolve_custom(model_id: str, *, max_weights_mb: int, enabled: bool = True, allow_local: bool = True,
                   url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> ModelSpec:
    """`resolve.resolve_custom`, its messages naming the curated ids."""
    return resolve.resolve_custom(model_id, max_weights_mb=max_weights_mb, enabled=enabled, allow_local=allow_local,
                                  known=SPECS, url_hosts=url_hosts)


def custom_generators(model_id: str, *, max_weights_mb: int, enabled: bool = True, allow_local: bool = True,
                      url_hosts: Sequence[str] = DEFAULT_URL_HOSTS) -> list[ModelSpec]:
    """`resolve.custom_generators`, its messages naming the curated ids."""
    return resolve.custom_generators(model_id, max_weights_mb=max_weights_mb, enabled=enabled,
                                     allow_local=allow_local, known=SPECS, url_hosts=url_hosts)


__all__ = ["CACHE_SIZE", "OPTIONS", "SWITCH", "WEIGHTS_SUFFIXES", "ModelRef", "clear_cache", "custom_generators",
           "file_safe_name", "parse_model_ref", "resolve_custom"]

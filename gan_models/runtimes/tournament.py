"""The tournament: which runtime and precision runs a model fastest here while keeping its quality, and why.

Every (runtime, precision) the registry offers on this device is built from the same module or exported graph, run on
held-out images (never the int8 calibration set) and compared with torch fp32 through the same Translator; those that
keep PSNR >= MIN_PSNR_DB are timed once as they are judged, and the FINALISTS fastest of them again, interleaved,
on one fixed input (the others are dropped at once, so peak memory holds FINALISTS candidates, not all). The fastest
wins, except that a less accurate candidate must beat a more accurate one by AUTO_MIN_SPEEDUP to be worth its error.
Each candidate gets one verdict, written with its ms and PSNR to `<cache>/<id>/tournament.<device>.json`:

    chosen | too slow | too inaccurate | export failed | not available on this CPU (or GPU) | not judged |
    not applicable

The record is keyed by the weights' sha256, the device, the CPU signature, the thread count, the export recipes and
the candidate list; while all of them hold it is reused without timing anything again.
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gan_models.runtimes.onnx_export as ox  # a module alias without importing the package (an import cycle)

from ..errors import BackendUnavailableError, GanModelsError, OnnxExportError, first_line
from ..specs import ModelSpec
from ..tiling import requested_tile, run_array
from .activity import yield_to_requests
from .base import Backend
from .cpu import cpu_signature
from .malloc import trim_heap
from .registry import RUNTIMES, Artifacts, Runtime

logger = logging.getLogger(__name__)

FORMAT = "gan_models.tournament/1"
# How candidates are judged and timed; bumping it judges every model again. 2: upscalers timed at <= 128 px.
# 3: and judged in tiles of <= 128 px.
RECIPE = 7
MIN_PSNR_DB = ox.MIN_PSNR_DB
# A reduced precision is taken only when it is clearly faster than full precision on this machine.
AUTO_MIN_SPEEDUP = 1.1
FINALISTS = 2  # candidates alive at once: the others are dropped after one timed run (peak memory)
EXACT_DB = 80.0  # PSNR vs fp32 above this: agreement within rounding (fp32 runtimes reach 100-160 dB)
TIMING_REPEATS = 3
# Upscalers are judged and timed at most this many pixels a side (tiles): every candidate stays alive until the timing
# is done, and onnxruntime's arena keeps the largest run it has seen. RRDBNet judged whole on the 160x107 parity image
# with three candidates alive peaked at 3102 MB.
UPSCALE_SIDE = 128

CHOSEN = "chosen"
TOO_SLOW = "too slow"
TOO_INACCURATE = "too inaccurate"
EXPORT_FAILED = "export failed"
NOT_JUDGED = "not judged"
NOT_APPLICABLE = "not applicable"
FULL_PRECISION = "fp32"
# CPU flags that decide which kernels run (int8 dot products, bf16 math); a record made elsewhere is not reused.


def not_available(device: str) -> str:
    return "not available on this GPU" if device == "cuda" else "not available on this CPU"


@dataclass(frozen=True)
class Outcome:
    """What the tournament picked: the backend to run, and the record that says why."""

    runtime: str
    precision: str
    backend: Backend
    record: dict[str, Any]
    record_path: Path
    reused: bool  # True when the recorded choice was taken without timing anything


def record_path(
    root: Path, spec: ModelSpec, device: str, runtimes: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
) -> Path:
    """Where the choice of `spec` on `device` is recorded; a tournament limited to some candidates has its own file."""
    suffix = "".join("." + "+".join(part) for part in (runtimes, precisions) if part is not None)
    return ox.model_dir(root, spec) / f"tournament.{device}{suffix}.json"


def bench_input(spec: ModelSpec) -> np.ndarray:
    """The fixed (1, 3, S, S) input every candidate is timed on: a tile for upscalers, the training size otherwise."""
    side = _upscale_tile(spec) if spec.task == "upscale" else ox.translation_side(spec)
    lo, hi = spec.value_range
    return (np.random.default_rng(3).random((1, 3, side, side), dtype=np.float32) * (hi - lo) + lo).astype(np.float32)


def time_backends(backends: dict[str, Backend], x: np.ndarray, repeats: int = TIMING_REPEATS) -> dict[str, float]:
    """Best-of-`repeats` seconds per backend, runs interleaved so background load hits every candidate alike."""
    for backend in backends.values():
        backend(x)  # warm-up: the first run plans memory and picks kernels
    best = {name: float("inf") for name in backends}
    for _ in range(repeats):
        for name, backend in backends.items():
            t = time.perf_counter()
            backend(x)
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _upscale_tile(spec: ModelSpec) -> int:
    return min(spec.tile or UPSCALE_SIDE, UPSCALE_SIDE)


def _judge_tile(spec: ModelSpec) -> int | None:
    """Tiles for upscalers (as users run them), the whole image for the others (InstanceNorm sees all of it)."""
    return requested_tile(_upscale_tile(spec), spec.size_multiple) if spec.task == "upscale" else None


def _key(spec: ModelSpec, state_sha: str, device: str, threads: int, names: Sequence[str]) -> dict[str, Any]:
    return {
        "spec": ox.spec_record(spec),
        "state_sha256": state_sha,
        "device": device,
        "cpu": cpu_signature(),
        "threads": threads,
        "recipes": {"tournament": RECIPE, **{f"onnx {p}": v for p, v in ox.RECIPES.items()}},
        "candidates": {n: list(RUNTIMES[n].offers) for n in names},
    }


def _label(runtime: str, precision: str) -> str:
    return f"{runtime} {precision}"


def _candidates(names: Sequence[str], precisions: Sequence[str] | None) -> Iterator[tuple[Runtime, str]]:
    """Every (runtime, precision) of the tournament, in registry order."""
    for name in names:
        runtime = RUNTIMES[name]
        for precision in runtime.offers:
            if precisions is None or precision in precisions:
                yield runtime, precision


def _not_built(runtime: Runtime, precision: str, module: Any, *, device: str, trained: bool) -> tuple[str, str] | None:
    """(verdict, reason) of a candidate that is not even built here, else None."""
    if not runtime.available():
        return not_available(device), f"{runtime.name} is not installed"
    if precision not in runtime.precisions(device):
        return not_available(device), f"{runtime.name} does not offer {precision} on this {device}"
    if (reason := runtime.not_applicable(module, precision)) is not None:
        return NOT_APPLICABLE, reason
    if precision == "int8" and not trained:
        return NOT_JUDGED, ("int8 is judged on trained weights only; these are in memory (random-init or unsaved), "
                            "where its error says nothing about real models")
    return None


def _judge(
    runtime: Runtime, precision: str, artifacts: Artifacts, *, device: str, threads: int | None, trained: bool,
    inputs: list[tuple[np.ndarray, str]], references: list[np.ndarray],
) -> tuple[dict[str, Any], Backend | None]:
    """One candidate's record (verdict set unless it is still in the running) and its backend when it is."""
    entry: dict[str, Any] = {"runtime": runtime.name, "precision": precision}
    if (skipped := _not_built(runtime, precision, artifacts.module, device=device, trained=trained)) is not None:
        verdict, reason = skipped
        return dict(entry, verdict=verdict, reason=reason), None
    try:
        backend = runtime.make(artifacts, precision=precision, device=device, threads=threads)
    except (OnnxExportError, BackendUnavailableError) as exc:
        return dict(entry, verdict=EXPORT_FAILED, reason=first_line(exc)), None
    except Exception as exc:  # noqa: BLE001 - a runtime's loader may raise anything; one candidate, not the tournament
        return dict(entry, verdict=EXPORT_FAILED, reason=f"{type(exc).__name__}: {first_line(exc)}"), None
    spec = artifacts.spec
    tile = _judge_tile(spec)
    try:
        psnrs = [ox.psnr_db(run_array(backend, x, spec, tile=tile), ref, spec.value_range)
                 for (x, _), ref in zip(inputs, references, strict=True)]
    except Exception as exc:  # noqa: BLE001 - a failing run disqualifies the candidate, whatever it raised
        reason = f"failed to run: {type(exc).__name__}: {first_line(exc)}"
        return dict(entry, verdict=EXPORT_FAILED, reason=reason), None
    psnr = min(psnrs)
    entry["psnr_db"] = ox.json_float(round(psnr, 2) if np.isfinite(psnr) else psnr)
    if psnr < MIN_PSNR_DB:
        return dict(entry, verdict=TOO_INACCURATE,
                    reason=f"PSNR vs torch fp32 {psnr:.1f} dB < {MIN_PSNR_DB:.0f} dB on held-out images"), None
    return entry, backend


def _quality(entry: dict[str, Any]) -> float:
    """PSNR vs torch fp32, capped at EXACT_DB: above it the outputs agree within rounding, and are equally good."""
    psnr = entry.get("psnr_db")
    if psnr is None:  # not measured: full precision counts as exact, a reduced one as just passing
        return EXACT_DB if entry["precision"] == FULL_PRECISION else MIN_PSNR_DB
    return min(float(psnr), EXACT_DB)


def _decide(entries: dict[str, dict[str, Any]], seconds: dict[str, float]) -> str:
    """The winning label among the timed ones; fills every timed entry's ms and verdict.

    A less accurate candidate must be AUTO_MIN_SPEEDUP x faster than a more accurate one to be worth its error: of
    the candidates within that margin of the fastest, the most accurate wins (full precision over int8, bf16 over
    int8 when they time alike), and the faster of equally accurate ones.
    """
    fastest = min(seconds, key=seconds.__getitem__)
    close = [k for k in seconds if seconds[k] < AUTO_MIN_SPEEDUP * seconds[fastest]]
    winner = max(close, key=lambda k: (_quality(entries[k]), -seconds[k]))
    for label, s in seconds.items():
        entry = entries[label]
        entry["ms"] = round(s * 1000, 2)
        if label == winner:
            entry.update(verdict=CHOSEN, reason=f"fastest that keeps PSNR >= {MIN_PSNR_DB:.0f} dB"
                         + (f" (a less accurate candidate needs {AUTO_MIN_SPEEDUP}x over a more accurate one)"
                            if winner != fastest else ""))
        elif label in close and _quality(entry) < _quality(entries[winner]):
            entry.update(verdict=TOO_SLOW, reason=f"{seconds[winner] / s:.2f}x faster than {winner}, less than the "
                         f"{AUTO_MIN_SPEEDUP}x a less accurate candidate needs")
        else:
            entry.update(verdict=TOO_SLOW, reason=f"{s / seconds[winner]:.2f}x the time of {winner}")
    return winner


def _export_first(artifacts: Artifacts, names: Sequence[str], precisions: Sequence[str] | None, *, device: str,
                  trained: bool) -> None:
    """Make every graph the candidates will read before any candidate is built: exporting a large network briefly
    holds several copies of it, and finalists alive meanwhile would add to that peak. Failures are remembered in
    the artifacts and become the candidates' verdicts later."""
    wanted: dict[str, None] = {}
    for runtime, precision in _candidates(names, precisions):
        if _not_built(runtime, precision, artifacts.module, device=device, trained=trained) is None:
            wanted.update(dict.fromkeys(runtime.graphs(precision)))
    for graph in wanted:
        try:
            artifacts.export(graph)
        except GanModelsError:  # the candidate that reads it gets this as its verdict when it is built
            continue
    gc.collect()
    trim_heap()


def run_tournament(
    spec: ModelSpec,
    module: Any,
    source: Any | None,
    *,
    device: str = "cpu",
    threads: int | None = None,
    root: str | Path | None = None,
    runtimes: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    retime: bool = False,
) -> Outcome:
    """Pick the fastest runtime and precision for `module` on `device` that keeps its quality, or reuse the record.

    Parameters:
        module: the loaded network (not modified: candidates are built from a private fp32 CPU copy).
        source: its WeightsSource; None means in-memory weights, on which int8 is not judged.
        device: "cpu" or "cuda" (already resolved).
        threads: CPU threads of the candidates (None: torch's setting); part of the record's key.
        root: the export cache (default `cache_dir()`).
        runtimes: limit the candidates to these registry names (torch fp32 is the reference either way).
        precisions: limit them to these precisions (an explicit request: int8 is then judged on any weights).
        retime: judge again even when a matching record exists.

    Raises:
        BackendUnavailableError / OnnxExportError: no candidate can run (only possible when `runtimes` leaves out
            torch); the message lists each candidate's verdict.
    """
    import torch

    from .torch_backend import TorchBackend

    if device not in ("cpu", "cuda"):
        raise GanModelsError(f"the tournament runs on 'cpu' or 'cuda', not {device!r}")
    names = tuple(RUNTIMES) if runtimes is None else tuple(runtimes)
    for name in names:
        if name not in RUNTIMES:
            raise GanModelsError(f"unknown runtime {name!r}; choose from: {', '.join(RUNTIMES)}")
    root = Path(root) if root is not None else ox.cache_dir()
    module = ox.prepare_module(module)
    key = _key(spec, ox.state_sha256(module), device, max(1, threads or torch.get_num_threads()), names)
    key["precisions"] = None if precisions is None else list(precisions)
    path = record_path(root, spec, device, None if runtimes is None else names, precisions)
    artifacts = Artifacts(spec=spec, module=module, source=source, root=root)

    recorded = ox.read_json(path, FORMAT)
    if not retime and recorded is not None and recorded.get("key") == key and recorded.get("chosen"):
        runtime, precision = recorded["chosen"]["runtime"], recorded["chosen"]["precision"]
        try:
            backend = RUNTIMES[runtime].make(artifacts, precision=precision, device=device, threads=threads)
        except (OnnxExportError, BackendUnavailableError) as exc:  # a file went missing or changed: judge again
            logger.info("%s: recorded choice %s %s unusable (%s); judging again", spec.id, runtime, precision, exc)
        else:
            return Outcome(runtime, precision, backend, recorded, path, reused=True)

    started = time.perf_counter()
    inputs = ox.holdout_inputs(spec)
    tile = _judge_tile(spec)
    reference = TorchBackend(module, device="cpu")
    references = [run_array(reference, x, spec, tile=tile) for x, _ in inputs]
    trained = source is not None or precisions is not None
    _export_first(artifacts, names, precisions, device=device, trained=trained)
    entries: dict[str, dict[str, Any]] = {}
    contenders: dict[str, Backend] = {}
    first_round: dict[str, float] = {}
    x_bench = bench_input(spec)
    for runtime, precision in _candidates(names, precisions):
        label = _label(runtime.name, precision)
        yield_to_requests()  # requests come first
        entries[label], backend = _judge(runtime, precision, artifacts, device=device, threads=threads,
                                         trained=trained, inputs=inputs, references=references)
        if backend is not None:
            contenders[label] = backend
            first_round[label] = time_backends({label: backend}, x_bench, repeats=1)[label]
            if len(contenders) > FINALISTS:  # bounded memory: every live candidate holds its graph and arena
                slowest = max(contenders, key=first_round.__getitem__)
                del contenders[slowest]
                fastest = min(contenders, key=first_round.__getitem__)
                entries[slowest].update(
                    ms=round(first_round[slowest] * 1000, 2), verdict=TOO_SLOW,
                    reason=f"{first_round[slowest] / first_round[fastest]:.2f}x the time of {fastest} in a first "
                           f"timed run; not among the {FINALISTS} timed again")
    record: dict[str, Any] = {
        "format": FORMAT,
        "key": key,
        "weights": ox.weights_record(source, module),
        "images": [label for _, label in inputs],
        "min_psnr_db": MIN_PSNR_DB,
        "bench_input": list(x_bench.shape),
    }
    chosen = None
    if contenders:
        yield_to_requests()
        seconds = time_backends(contenders, x_bench)
        chosen = _decide(entries, seconds)
        record["chosen"] = {"runtime": entries[chosen]["runtime"], "precision": entries[chosen]["precision"]}
    record.update(candidates=list(entries.values()), seconds=round(time.perf_counter() - started, 2),
                  created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    path.parent.mkdir(parents=True, exist_ok=True)  # no export may have made it (torch-only or failed candidates)
    ox.write_json(path, record)
    if chosen is None:
        reasons = "; ".join(f"{k}: {e['verdict']} ({e.get('reason', '')})" for k, e in entries.items())
        unavailable = all(e["verdict"] == not_available(device) for e in entries.values())
        error = BackendUnavailableError if unavailable else OnnxExportError
        raise error(f"{spec.id}: no candidate passed on {device}: {reasons}")
    winner = record["chosen"]
    return Outcome(winner["runtime"], winner["precision"], contenders[chosen], record, path, reused=False)


def recorded_choice(spec: ModelSpec, *, device: str = "cpu", root: str | Path | None = None) -> dict[str, Any] | None:
    """The recorded winner of `spec` on `device` ({"runtime", "precision"}) without hashing anything, or None.

    Cheap (one small JSON file): for status lines. None when nothing is recorded, or the weights file it was made from
    has changed since (size or modification time), or the weights were in memory.
    """
    root = Path(root) if root is not None else ox.cache_dir()
    recorded = ox.read_json(record_path(root, spec, device), FORMAT)
    if recorded is None or recorded.get("key", {}).get("spec") != ox.spec_record(spec):
        return None
    weights = recorded.get("weights", {})
    file = weights.get("path")
    if not file or not Path(file).is_file():
        return None
    st = Path(file).stat()
    if (st.st_size, st.st_mtime_ns) != (weights.get("size"), weights.get("mtime_ns")):
        return None
    return recorded.get("chosen")

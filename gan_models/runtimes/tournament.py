"""The tournament: which runtime and precision runs a model fastest here while keeping its quality, and why.

It runs in four phases, each a function of the one before:

    load    prepare the module, make the record's key, read the previous record (reused while it holds)
    judge   every (runtime, precision) the registry offers on this device is built from the same module or exported
            graph, run on held-out images (never the int8 calibration set) and compared with torch fp32 through the
            same Translator; of those that keep PSNR >= MIN_PSNR_DB at most FINALISTS stay alive: when one more
            joins, all of them are timed together, interleaved (FIRST_ROUND_REPEATS runs), and the slowest is
            dropped at once (peak memory holds FINALISTS + 1 candidates, not all); the finalists are timed again
            (TIMING_REPEATS runs), interleaved, on one fixed input
    decide  a pure function of the verdicts and their timings (median and quartiles of the runs): the fastest wins,
            except that a less accurate candidate must beat a more accurate one by AUTO_MIN_SPEEDUP to be worth its
            error. The decision is final unless, somewhere within the measured spread (each candidate anywhere
            between its quartiles), another candidate would win by more than NOISE_TOLERANCE: then the finalists
            are timed again after a quiet window (up to QUIET_ROUNDS times), and a decision still inside the noise
            is recorded with "final": false, so that the next process judges it again (at most MAX_JUDGINGS times
            in a row; after that the candidates are taken to be tied and the record stands)
    save    every candidate's frozen Verdict, written to `<cache>/<id>/tournament.<device>.json`:

    chosen | too slow | too inaccurate | export failed | not available on this CPU (or GPU) | not judged |
    not applicable

The record is keyed by the weights' sha256, the device, the CPU signature, the thread count, the export recipes and
the candidate list; while all of them hold (and the decision was final) it is reused without timing anything again.
Records of format 1 written before the noise rule (no "final") read as final; older code reads the new ones.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import itertools
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
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
# 3: and judged in tiles of <= 128 px. 8: medians and quartiles of repeated runs; decisions inside the noise re-judged.
RECIPE = 8
MIN_PSNR_DB = ox.MIN_PSNR_DB
# A reduced precision is taken only when it is clearly faster than full precision on this machine.
AUTO_MIN_SPEEDUP = 1.1
FINALISTS = 2  # candidates alive at once: the others are dropped after one timed run (peak memory)
EXACT_DB = 80.0  # PSNR vs fp32 above this: agreement within rounding (fp32 runtimes reach 100-160 dB)
TIMING_REPEATS = 5  # interleaved runs of each finalist: their median and quartiles decide
FIRST_ROUND_REPEATS = 3  # runs of the live candidates, timed together, before the slowest is dropped
# A decision is final unless, with each finalist anywhere between its quartiles, another one would be faster than the
# chosen one by more than this fraction. Otherwise the finalists are timed again after a quiet window, QUIET_ROUNDS
# times at most.
NOISE_TOLERANCE = 0.05
QUIET_ROUNDS = 2
QUIET_PAUSE_S = 0.5
# Judgings in a row (each in a new process) that may end inside the noise before the candidates count as tied.
MAX_JUDGINGS = 3
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
CONTENDER = "contender"  # still in the running: judged accurate enough and timed, not yet decided
FULL_PRECISION = "fp32"
# Which process made a record: one whose decision was not final is reused by the process that made it, not by a later
# one.
_PROCESS = uuid.uuid4().hex


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


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated runs of one candidate on the bench input."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.runs))

    @property
    def spread(self) -> tuple[float, float]:
        """The quartiles of the runs: where this candidate's time lies, give or take background load."""
        q1, q3 = np.percentile(self.runs, [25, 75])
        return float(q1), float(q3)


@dataclass(frozen=True)
class Verdict:
    """One candidate's outcome: CONTENDER while in the running, then one of the verdicts, with its measurements."""

    runtime: str
    precision: str
    verdict: str = CONTENDER
    reason: str = ""
    psnr_db: float | None = None  # PSNR vs torch fp32 (worst held-out image); None when it never ran
    timing: Timing | None = None  # None when it was never timed

    @property
    def candidate(self) -> str:
        return _label(self.runtime, self.precision)

    @property
    def ms(self) -> float | None:
        return None if self.timing is None else self.timing.median * 1000

    def to_record(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"runtime": self.runtime, "precision": self.precision}
        if self.psnr_db is not None:
            entry["psnr_db"] = ox.json_float(round(self.psnr_db, 2) if np.isfinite(self.psnr_db) else self.psnr_db)
        entry.update(verdict=self.verdict, reason=self.reason)
        if self.timing is not None:
            q1, q3 = self.timing.spread
            entry.update(ms=round(self.timing.median * 1000, 2), ms_spread=[round(q1 * 1000, 2), round(q3 * 1000, 2)],
                         ms_runs=[round(t * 1000, 2) for t in self.timing.runs])
        return entry

    @classmethod
    def from_record(cls, entry: Mapping[str, Any]) -> Verdict:
        """A verdict read back from a record; one written before runs were kept has its ms as its only run."""
        psnr = entry.get("psnr_db")
        runs_ms = entry.get("ms_runs") or ([entry["ms"]] if "ms" in entry else None)
        return cls(runtime=entry["runtime"], precision=entry["precision"], verdict=entry["verdict"],
                   reason=entry.get("reason", ""), psnr_db=None if psnr is None else float(psnr),
                   timing=None if runs_ms is None else Timing(tuple(float(ms) / 1000 for ms in runs_ms)))


@dataclass(frozen=True)
class Decision:
    """What decide() made of the verdicts: the winner's label (None when no candidate is left), every verdict settled,
    and whether the margin lay outside the measured noise."""

    winner: str | None
    verdicts: tuple[Verdict, ...]
    final: bool
    noise: str = ""  # why the decision is not final

    def chosen(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.candidate == self.winner), None)


@dataclass(frozen=True)
class Setup:
    """The load phase's result: what is judged, where its record lives, and the record found there."""

    spec: ModelSpec
    module: Any  # the private fp32 CPU copy every candidate is built from
    source: Any | None
    device: str
    threads: int | None
    names: tuple[str, ...]
    precisions: tuple[str, ...] | None
    key: dict[str, Any]
    path: Path
    artifacts: Artifacts
    previous: dict[str, Any] | None  # the record at `path` when it is one of ours

    @property
    def trained(self) -> bool:
        """int8 is judged on weights read from a file, or when a precision was asked for by name."""
        return self.source is not None or self.precisions is not None


@dataclass(frozen=True)
class Judged:
    """The judge phase's result: every candidate's verdict (CONTENDER for the timed finalists) and their backends."""

    verdicts: tuple[Verdict, ...]
    backends: Mapping[str, Backend]  # the finalists, alive
    images: tuple[str, ...]  # the held-out images they were judged on
    x_bench: np.ndarray  # the input they were timed on


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


def time_backends(backends: Mapping[str, Backend], x: np.ndarray, repeats: int = TIMING_REPEATS) -> dict[str, Timing]:
    """`repeats` timed runs per backend after one warm-up, interleaved so background load hits every candidate alike."""
    for backend in backends.values():
        backend(x)  # warm-up: the first run plans memory and picks kernels
    runs: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(repeats):
        for name, backend in backends.items():
            t = time.perf_counter()
            backend(x)
            runs[name].append(time.perf_counter() - t)
    return {name: Timing(tuple(r)) for name, r in runs.items()}


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


def _judge_one(
    runtime: Runtime, precision: str, setup: Setup, *, inputs: list[tuple[np.ndarray, str]],
    references: list[np.ndarray],
) -> tuple[Verdict, Backend | None]:
    """One candidate's verdict (CONTENDER when it keeps the quality bar) and its backend when it does."""
    entry = Verdict(runtime.name, precision)
    artifacts = setup.artifacts
    skipped = _not_built(runtime, precision, artifacts.module, device=setup.device, trained=setup.trained)
    if skipped is not None:
        verdict, reason = skipped
        return dataclasses.replace(entry, verdict=verdict, reason=reason), None
    try:
        backend = runtime.make(artifacts, precision=precision, device=setup.device, threads=setup.threads)
    except (OnnxExportError, BackendUnavailableError) as exc:
        return dataclasses.replace(entry, verdict=EXPORT_FAILED, reason=first_line(exc)), None
    except Exception as exc:  # noqa: BLE001 - a runtime's loader may raise anything; one candidate, not the tournament
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        return dataclasses.replace(entry, verdict=EXPORT_FAILED, reason=reason), None
    spec = artifacts.spec
    tile = _judge_tile(spec)
    try:
        psnrs = [ox.psnr_db(run_array(backend, x, spec, tile=tile), ref, spec.value_range)
                 for (x, _), ref in zip(inputs, references, strict=True)]
    except Exception as exc:  # noqa: BLE001 - a failing run disqualifies the candidate, whatever it raised
        reason = f"failed to run: {type(exc).__name__}: {first_line(exc)}"
        return dataclasses.replace(entry, verdict=EXPORT_FAILED, reason=reason), None
    entry = dataclasses.replace(entry, psnr_db=min(psnrs))
    if entry.psnr_db < MIN_PSNR_DB:
        reason = f"PSNR vs torch fp32 {entry.psnr_db:.1f} dB < {MIN_PSNR_DB:.0f} dB on held-out images"
        return dataclasses.replace(entry, verdict=TOO_INACCURATE, reason=reason), None
    return entry, backend


def _quality(v: Verdict) -> float:
    """PSNR vs torch fp32, capped at EXACT_DB: above it the outputs agree within rounding, and are equally good."""
    if v.psnr_db is None:  # not measured: full precision counts as exact, a reduced one as just passing
        return EXACT_DB if v.precision == FULL_PRECISION else MIN_PSNR_DB
    return min(v.psnr_db, EXACT_DB)


def _pick(quality: Mapping[str, float], seconds: Mapping[str, float]) -> str:
    """The rule: of the candidates within AUTO_MIN_SPEEDUP of the fastest, the most accurate, then the fastest."""
    fastest = min(seconds, key=seconds.__getitem__)
    close = [k for k in seconds if seconds[k] < AUTO_MIN_SPEEDUP * seconds[fastest]]
    return max(close, key=lambda k: (quality[k], -seconds[k]))


def _rival(quality: Mapping[str, float], spreads: Mapping[str, tuple[float, float]], winner: str) -> tuple[str, float]:
    """The candidate that beats `winner` by the largest factor somewhere within the measured spread, and that factor
    (1.0 when `winner` wins everywhere). Each candidate's time is tried at both of its quartiles (every corner)."""
    rival, worst = winner, 1.0
    for corner in itertools.product(*spreads.values()):
        seconds = dict(zip(spreads, corner, strict=True))
        other = _pick(quality, seconds)
        if other != winner and seconds[winner] / seconds[other] > worst:
            rival, worst = other, seconds[winner] / seconds[other]
    return rival, worst


def decide(verdicts: Sequence[Verdict]) -> Decision:
    """Settle every CONTENDER (a timed candidate) as CHOSEN or TOO_SLOW by the medians of its runs; the others keep
    their verdicts.

    A less accurate candidate must be AUTO_MIN_SPEEDUP x faster than a more accurate one to be worth its error: of
    the candidates within that margin of the fastest, the most accurate wins (full precision over int8, bf16 over
    int8 when they time alike), and the faster of equally accurate ones. The decision is final unless another
    candidate would be more than NOISE_TOLERANCE faster than the winner somewhere within the quartiles of the runs.
    """
    timed = {v.candidate: v for v in verdicts if v.verdict == CONTENDER}
    if not timed:
        return Decision(None, tuple(verdicts), final=True)
    quality = {k: _quality(v) for k, v in timed.items()}
    seconds = {k: v.timing.median for k, v in timed.items()}
    winner = _pick(quality, seconds)
    fastest = min(seconds, key=seconds.__getitem__)
    rival, factor = _rival(quality, {k: v.timing.spread for k, v in timed.items()}, winner)
    final = factor <= 1 + NOISE_TOLERANCE
    noise = "" if final else (f"{rival} may be {factor:.2f}x faster than {winner} within the quartiles of their "
                              f"{len(timed[winner].timing.runs)} runs")
    settled = []
    for v in verdicts:
        label = v.candidate
        if label not in timed:
            settled.append(v)
            continue
        s = seconds[label]
        if label == winner:
            reason = f"fastest that keeps PSNR >= {MIN_PSNR_DB:.0f} dB" + (
                f" (a less accurate candidate needs {AUTO_MIN_SPEEDUP}x over a more accurate one)"
                if winner != fastest else "") + ("" if final else f"; not final: {noise}")
            settled.append(dataclasses.replace(v, verdict=CHOSEN, reason=reason))
        elif s < AUTO_MIN_SPEEDUP * seconds[fastest] and quality[label] < quality[winner]:
            settled.append(dataclasses.replace(v, verdict=TOO_SLOW, reason=(
                f"{seconds[winner] / s:.2f}x faster than {winner}, less than the {AUTO_MIN_SPEEDUP}x a less "
                f"accurate candidate needs")))
        else:
            settled.append(dataclasses.replace(v, verdict=TOO_SLOW, reason=f"{s / seconds[winner]:.2f}x the time of "
                                                                            f"{winner}"))
    return Decision(winner, tuple(settled), final=final, noise=noise)


def _export_first(setup: Setup) -> None:
    """Make every graph the candidates will read before any candidate is built: exporting a large network briefly
    holds several copies of it, and finalists alive meanwhile would add to that peak. Failures are remembered in
    the artifacts and become the candidates' verdicts later."""
    wanted: dict[str, None] = {}
    for runtime, precision in _candidates(setup.names, setup.precisions):
        if _not_built(runtime, precision, setup.module, device=setup.device, trained=setup.trained) is None:
            wanted.update(dict.fromkeys(runtime.graphs(precision)))
    for graph in wanted:
        try:
            setup.artifacts.export(graph)
        except GanModelsError:  # the candidate that reads it gets this as its verdict when it is built
            continue
    gc.collect()
    trim_heap()


def load(
    spec: ModelSpec, module: Any, source: Any | None, *, device: str = "cpu", threads: int | None = None,
    root: str | Path | None = None, runtimes: Sequence[str] | None = None, precisions: Sequence[str] | None = None,
) -> Setup:
    """Phase 1: check the request, prepare the module, make the record's key and read the previous record."""
    import torch

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
    return Setup(spec=spec, module=module, source=source, device=device, threads=threads, names=names,
                 precisions=None if precisions is None else tuple(precisions), key=key, path=path,
                 artifacts=Artifacts(spec=spec, module=module, source=source, root=root),
                 previous=ox.read_json(path, FORMAT))


def _noisy_judgings(setup: Setup) -> int:
    """How many judgings of this same key in a row ended inside the noise, before this one."""
    previous = setup.previous
    if previous is None or previous.get("key") != setup.key or previous.get("final", True):
        return 0
    return int(previous.get("noisy_judgings", 1))


def reusable(setup: Setup) -> bool:
    """The previous record holds: same key and a choice, made final, or inside the noise but by this process, or
    inside the noise MAX_JUDGINGS times in a row (the candidates are tied: any of them will do)."""
    previous = setup.previous
    if previous is None or previous.get("key") != setup.key or not previous.get("chosen"):
        return False
    return (previous.get("final", True) or previous.get("process") == _PROCESS
            or _noisy_judgings(setup) >= MAX_JUDGINGS)


def judge(setup: Setup) -> Judged:
    """Phase 2: build, run and time every candidate; the FINALISTS fastest of those that keep the quality bar stay
    CONTENDERs, timed again together (interleaved); the others get their verdicts here."""
    from .torch_backend import TorchBackend

    spec = setup.spec
    inputs = ox.holdout_inputs(spec)
    tile = _judge_tile(spec)
    reference = TorchBackend(setup.module, device="cpu")
    references = [run_array(reference, x, spec, tile=tile) for x, _ in inputs]
    _export_first(setup)
    verdicts: dict[str, Verdict] = {}
    contenders: dict[str, Backend] = {}
    x_bench = bench_input(spec)
    for runtime, precision in _candidates(setup.names, setup.precisions):
        yield_to_requests()  # requests come first
        verdict, backend = _judge_one(runtime, precision, setup, inputs=inputs, references=references)
        label = verdict.candidate
        if backend is None:
            verdicts[label] = verdict
            continue
        contenders[label] = backend
        verdicts[label] = verdict
        if len(contenders) > FINALISTS:  # bounded memory: every live candidate holds its graph and arena
            # Timed together, interleaved: on a busy machine, times taken minutes apart are not comparable.
            rematch = time_backends(contenders, x_bench, repeats=FIRST_ROUND_REPEATS)
            for k, timing in rematch.items():
                verdicts[k] = dataclasses.replace(verdicts[k], timing=timing)
            slowest = max(contenders, key=lambda k: rematch[k].median)
            del contenders[slowest]
            fastest = min(contenders, key=lambda k: rematch[k].median)
            verdicts[slowest] = dataclasses.replace(
                verdicts[slowest], verdict=TOO_SLOW,
                reason=f"{rematch[slowest].median / rematch[fastest].median:.2f}x the time of {fastest} timed "
                       f"together; not among the {FINALISTS} timed again")
    judged = Judged(tuple(verdicts.values()), contenders, tuple(label for _, label in inputs), x_bench)
    return time_finalists(judged) if contenders else judged


def time_finalists(judged: Judged) -> Judged:
    """Time the finalists again, interleaved, after requests have finished; their new runs replace the old."""
    yield_to_requests()
    timings = time_backends(judged.backends, judged.x_bench)
    return dataclasses.replace(judged, verdicts=tuple(
        dataclasses.replace(v, timing=timings[v.candidate]) if v.candidate in timings else v
        for v in judged.verdicts))


def quiet_window() -> None:
    """Let requests finish and our own runtimes' worker threads settle before timing again."""
    yield_to_requests()
    time.sleep(QUIET_PAUSE_S)


def save(setup: Setup, judged: Judged, decision: Decision, seconds: float) -> dict[str, Any]:
    """Phase 4: write the record (every verdict, the choice, whether it is final) and return it."""
    record: dict[str, Any] = {
        "format": FORMAT,
        "key": setup.key,
        "weights": ox.weights_record(setup.source, setup.module),
        "images": list(judged.images),
        "min_psnr_db": MIN_PSNR_DB,
        "bench_input": list(judged.x_bench.shape),
    }
    chosen = decision.chosen()
    if chosen is not None:
        record["chosen"] = {"runtime": chosen.runtime, "precision": chosen.precision}
    record.update(final=decision.final, noisy_judgings=0 if decision.final else _noisy_judgings(setup) + 1,
                  process=_PROCESS)
    if decision.noise:
        record["noise"] = decision.noise
    record.update(candidates=[v.to_record() for v in decision.verdicts], seconds=round(seconds, 2),
                  created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    setup.path.parent.mkdir(parents=True, exist_ok=True)  # no export may have made it (torch-only or failed candidates)
    ox.write_json(setup.path, record)
    return record


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
    setup = load(spec, module, source, device=device, threads=threads, root=root, runtimes=runtimes,
                 precisions=precisions)
    if not retime and reusable(setup):
        recorded = setup.previous
        runtime, precision = recorded["chosen"]["runtime"], recorded["chosen"]["precision"]
        try:
            backend = RUNTIMES[runtime].make(setup.artifacts, precision=precision, device=device, threads=threads)
        except (OnnxExportError, BackendUnavailableError) as exc:  # a file went missing or changed: judge again
            logger.info("%s: recorded choice %s %s unusable (%s); judging again", spec.id, runtime, precision, exc)
        else:
            return Outcome(runtime, precision, backend, recorded, setup.path, reused=True)

    started = time.perf_counter()
    judged = judge(setup)
    decision = decide(judged.verdicts)
    for _ in range(QUIET_ROUNDS):
        if decision.final:
            break
        logger.info("%s: %s; timing again after a quiet window", spec.id, decision.noise)
        quiet_window()
        judged = time_finalists(judged)
        decision = decide(judged.verdicts)
    record = save(setup, judged, decision, time.perf_counter() - started)
    if decision.winner is None:
        reasons = "; ".join(f"{v.candidate}: {v.verdict} ({v.reason})" for v in decision.verdicts)
        unavailable = all(v.verdict == not_available(device) for v in decision.verdicts)
        error = BackendUnavailableError if unavailable else OnnxExportError
        raise error(f"{spec.id}: no candidate passed on {device}: {reasons}")
    return Outcome(record["chosen"]["runtime"], record["chosen"]["precision"], judged.backends[decision.winner],
                   record, setup.path, reused=False)


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

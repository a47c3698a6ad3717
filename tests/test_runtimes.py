"""The runtime registry, the tournament's verdicts and the background switch, on tiny models, offline.

Stub runtimes wrap the real torch backend and add exactly one defect each (a delay, noise, a failing export, a
missing package, a precision this CPU lacks), so each verdict is produced by the tournament's real measurements.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import threading
import time
import weakref

import numpy as np
import pytest

from export.__main__ import main as export_main
from gan_models import translator_for
from gan_models.errors import GanModelsError, OnnxExportError
from gan_models.runtimes import (
    BACKENDS,
    RUNTIMES,
    Preparer,
    Runtime,
    TorchBackend,
    activity,
    cpu,
    get_runtime,
    requested_backend,
    worker,
)
from gan_models.runtimes import onnx_export as ox
from gan_models.runtimes import tournament as tn
from gan_models.weights import LoadedModel, build_generator, load_model

from .conftest import make_tiny_model, rgb_image


class Flawed:
    """torch fp32 plus one flaw: `delay` seconds per call, or Gaussian `noise` on the output."""

    device = "cpu"

    def __init__(self, module, *, name: str, precision: str, delay: float = 0.0, noise: float = 0.0) -> None:
        self.name, self.precision = name, precision
        self._inner = TorchBackend(copy.deepcopy(module), device="cpu")
        self._delay, self._noise = delay, noise
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self._delay)
        y = self._inner(x)
        if self._noise:
            y = y + np.random.default_rng(0).normal(0, self._noise, y.shape).astype(np.float32)
        return y


def _stub(name: str, *, available: bool = True, here: tuple[str, ...] = ("fp32",), made: list | None = None,
          fail: str | None = None, **flaw) -> Runtime:
    def make(artifacts, *, precision, device, threads):
        if made is not None:
            made.append(precision)
        if fail:
            raise OnnxExportError(fail)
        return Flawed(artifacts.module, name=name, precision=precision, **flaw)

    return Runtime(name=name, offers=("fp32", "bf16"), available=lambda: available, precisions=lambda device: here,
                   make=make, install=f"pip install {name}")


@pytest.fixture
def stubs(monkeypatch):
    """Five stub runtimes next to torch; returns the list each appends to when asked to build a backend."""
    made: dict[str, list] = {n: [] for n in ("slow", "noisy", "broken", "missing", "nobf16")}
    entries = {
        "slow": _stub("slow", made=made["slow"], delay=0.05),
        "noisy": _stub("noisy", made=made["noisy"], noise=0.1),
        "broken": _stub("broken", made=made["broken"], fail="simulated: the exporter crashed"),
        "missing": _stub("missing", available=False, made=made["missing"]),
        "nobf16": _stub("nobf16", here=("fp32",), made=made["nobf16"], delay=0.05),  # bf16 needs avx512_bf16
    }
    for name, runtime in entries.items():
        monkeypatch.setitem(RUNTIMES, name, runtime)
    return made


def _verdicts(record: dict) -> dict[str, dict]:
    return {f"{c['runtime']} {c['precision']}": c for c in record["candidates"]}


def test_each_verdict_comes_from_a_measurement_and_is_recorded_with_the_reason(tiny_specs, tmp_path, stubs,
                                                                               monkeypatch):
    monkeypatch.setattr(tn, "FINALISTS", 8)  # every accurate candidate timed to the end (torch bf16 too, where offered)
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    names = ("torch", "slow", "noisy", "broken", "missing", "nobf16")
    outcome = tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names)
    assert (outcome.runtime, outcome.precision, outcome.reused) == ("torch", "fp32", False)
    record = json.loads(outcome.record_path.read_text())
    v = _verdicts(record)
    assert v["torch fp32"]["verdict"] == tn.CHOSEN and v["torch fp32"]["psnr_db"] == "inf"
    assert v["slow fp32"]["verdict"] == tn.TOO_SLOW and v["slow fp32"]["ms"] >= 50
    assert v["slow fp32"]["ms"] > v["torch fp32"]["ms"] and "the time of torch fp32" in v["slow fp32"]["reason"]
    assert v["noisy fp32"]["verdict"] == tn.TOO_INACCURATE and v["noisy fp32"]["psnr_db"] < tn.MIN_PSNR_DB
    assert "ms" not in v["noisy fp32"]  # the inaccurate are never timed
    assert v["broken fp32"]["verdict"] == tn.EXPORT_FAILED and "exporter crashed" in v["broken fp32"]["reason"]
    assert v["missing fp32"]["verdict"] == "not available on this CPU"
    assert "not installed" in v["missing fp32"]["reason"]
    assert v["nobf16 bf16"]["verdict"] == "not available on this CPU" and v["nobf16 fp32"]["verdict"] == tn.TOO_SLOW
    assert stubs["missing"] == [] and stubs["nobf16"] == ["fp32"]  # never built what cannot run here
    assert record["key"]["cpu"] == tn.cpu_signature() and record["key"]["state_sha256"] == ox.state_sha256(
        loaded.module)
    assert record["images"][0].startswith("examples/") and len(record["images"]) == 2  # parity + a held-out crop


def test_a_recorded_choice_is_reused_without_timing_until_its_key_changes(tiny_specs, tmp_path, stubs, monkeypatch):
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    names = ("torch", "slow")
    tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names)
    assert stubs["slow"] == ["fp32"]
    again = tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names)
    assert again.reused and stubs["slow"] == ["fp32"]  # the loser is not even built again
    monkeypatch.setattr(tn, "cpu_signature", lambda: "another CPU, 64 logical CPUs, avx512_bf16")
    moved = tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names)
    assert not moved.reused and stubs["slow"] == ["fp32", "fp32"]
    other = LoadedModel(spec=spec, module=build_generator(spec).eval(), source=loaded.source)  # new weights
    assert not tn.run_tournament(spec, other.module, other.source, device="cpu", root=tmp_path, runtimes=names).reused


def _timed(runtime: str, precision: str, *ms: float, psnr: float | None = None) -> tn.Verdict:
    """A contender as the judge phase leaves it: accurate enough, timed `ms` (one value per run)."""
    return tn.Verdict(runtime, precision, psnr_db=psnr, timing=tn.Timing(tuple(t / 1000 for t in ms)))


def _settled(decision: tn.Decision) -> dict[str, tn.Verdict]:
    return {v.candidate: v for v in decision.verdicts}


@pytest.mark.parametrize(("fp32_ms", "int8_ms", "winner"), [(100, 95, "fp32"), (100, 60, "int8")])
def test_a_reduced_precision_must_be_clearly_faster_than_full_precision(fp32_ms, int8_ms, winner):
    decision = tn.decide([_timed("onnxruntime", "fp32", fp32_ms), _timed("onnxruntime", "int8", int8_ms)])
    assert decision.winner == f"onnxruntime {winner}" and decision.final
    loser = _settled(decision)[f"onnxruntime {'int8' if winner == 'fp32' else 'fp32'}"]
    assert loser.verdict == tn.TOO_SLOW
    if winner == "fp32":
        assert f"{tn.AUTO_MIN_SPEEDUP}x" in loser.reason


@pytest.mark.parametrize(("bf16_ms", "winner"), [(14.3, "openvino bf16"), (20.0, "openvino int8")])
def test_of_two_reduced_precisions_that_time_alike_the_more_accurate_wins(bf16_ms, winner):
    decision = tn.decide([_timed("openvino", "bf16", bf16_ms, psnr=71.4), _timed("openvino", "int8", 13.1, psnr=51.7),
                          _timed("onnxruntime", "fp32", 19.5, psnr=132.1)])
    assert decision.winner == winner
    v = _settled(decision)
    assert v["openvino int8" if winner == "openvino bf16" else "openvino bf16"].verdict == tn.TOO_SLOW
    assert v["onnxruntime fp32"].verdict == tn.TOO_SLOW  # exact, but not within 1.1x of the fastest


def test_a_clear_winner_is_final_and_every_timing_keeps_its_runs():
    too_inaccurate = tn.Verdict("noisy", "fp32", verdict=tn.TOO_INACCURATE, reason="PSNR 12 dB", psnr_db=12.0)
    decision = tn.decide([_timed("torch", "fp32", 50, 52, 49, 51, 50), too_inaccurate,
                          _timed("onnxruntime", "fp32", 30, 31, 29, 30, 33)])
    assert decision.winner == "onnxruntime fp32" and decision.final and decision.noise == ""
    v = _settled(decision)
    assert v["onnxruntime fp32"].verdict == tn.CHOSEN and "not final" not in v["onnxruntime fp32"].reason
    assert v["torch fp32"].verdict == tn.TOO_SLOW and v["torch fp32"].reason == "1.67x the time of onnxruntime fp32"
    assert v["noisy fp32"] == too_inaccurate  # a verdict given by the judge phase stands
    assert v["torch fp32"].ms == pytest.approx(50)  # the median of the runs
    assert v["torch fp32"].timing.spread == (0.05, 0.051)  # their quartiles


def test_a_margin_inside_the_noise_is_not_final():
    # Medians 10 vs 12 ms: a reads faster, but its runs spread from 10 to 14 ms and b's lie at 11-13 ms.
    decision = tn.decide([_timed("a", "fp32", 10, 10, 10, 14, 15), _timed("b", "fp32", 11, 11, 12, 13, 13)])
    assert decision.winner == "a fp32" and not decision.final
    assert decision.noise == "b fp32 may be 1.27x faster than a fp32 within the quartiles of their 5 runs"
    assert _settled(decision)["a fp32"].reason.endswith("not final: " + decision.noise)


def test_candidates_tied_within_the_tolerance_are_a_final_decision():
    decision = tn.decide([_timed("a", "fp32", 10.0, 10.1, 10.4), _timed("b", "fp32", 10.1, 10.2, 10.3)])
    assert decision.winner == "a fp32" and decision.final  # b may win within the noise, but by 1.01x: a tie


@pytest.mark.parametrize(("int8_runs", "winner", "final"), [
    ((60, 61, 62), "int8", True),  # 1.6x faster, clearly: worth its error
    ((95, 96, 97), "fp32", True),  # alike: full precision, whatever the noise
    ((92, 93, 75, 70, 94), "fp32", False),  # 1.09x by the medians, but up to 1.33x within the quartiles
])
def test_the_accuracy_rule_is_judged_within_the_noise_too(int8_runs, winner, final):
    decision = tn.decide([_timed("onnxruntime", "fp32", 100, 100, 101, 99, 100), _timed("onnxruntime", "int8",
                                                                                        *int8_runs)])
    assert (decision.winner, decision.final) == (f"onnxruntime {winner}", final)


def test_nothing_timed_is_decided_without_a_winner():
    failed = tn.Verdict("broken", "fp32", verdict=tn.EXPORT_FAILED, reason="the exporter crashed")
    assert tn.decide([failed]) == tn.Decision(None, (failed,), final=True)


def test_a_verdict_survives_the_record_round_trip_and_old_records_still_read():
    v = tn.Verdict("openvino", "bf16", verdict=tn.CHOSEN, reason="fastest", psnr_db=71.43,
                   timing=tn.Timing((0.01234, 0.01302, 0.0125)))
    entry = v.to_record()
    assert entry == {"runtime": "openvino", "precision": "bf16", "psnr_db": 71.43, "verdict": tn.CHOSEN,
                     "reason": "fastest", "ms": 12.5, "ms_spread": [12.42, 12.76], "ms_runs": [12.34, 13.02, 12.5]}
    back = tn.Verdict.from_record(json.loads(json.dumps(entry)))
    assert back.to_record() == entry and back.timing.runs == pytest.approx(v.timing.runs, abs=1e-5)
    exact = tn.Verdict("torch", "fp32", verdict=tn.TOO_SLOW, psnr_db=float("inf"))
    assert tn.Verdict.from_record(json.loads(json.dumps(exact.to_record()))) == exact
    old = {"runtime": "onnxruntime", "precision": "int8", "psnr_db": 48.2, "verdict": tn.TOO_SLOW, "reason": "r",
           "ms": 20.5}  # recipe 7: best of 3, no runs kept
    assert tn.Verdict.from_record(old).timing == tn.Timing((0.0205,))
    assert tn.Verdict.from_record({"runtime": "x", "precision": "fp32", "verdict": tn.NOT_JUDGED}).timing is None


def test_the_phases_load_judge_decide_save(tiny_specs, tmp_path, stubs, monkeypatch):
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    names, only = ("torch", "slow", "noisy", "broken"), ("fp32",)
    setup = tn.load(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names, precisions=only)
    assert setup.previous is None and not tn.reusable(setup) and setup.trained
    assert setup.path == tn.record_path(tmp_path, spec, "cpu", names, only) and not setup.path.exists()
    judged = tn.judge(setup)
    v = {x.candidate: x for x in judged.verdicts}
    assert set(judged.backends) == {"torch fp32", "slow fp32"}  # the accurate ones, alive for the decision
    for label in judged.backends:
        assert v[label].verdict == tn.CONTENDER and len(v[label].timing.runs) == tn.TIMING_REPEATS
    assert min(v["slow fp32"].timing.runs) >= 0.05
    assert v["noisy fp32"].verdict == tn.TOO_INACCURATE and v["noisy fp32"].timing is None
    assert v["broken fp32"].verdict == tn.EXPORT_FAILED and judged.images[0].startswith("examples/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v["torch fp32"].verdict = tn.CHOSEN
    decision = tn.decide(judged.verdicts)
    assert decision.winner == "torch fp32" and decision.final  # 50 ms of sleep: far outside any noise
    record = tn.save(setup, judged, decision, seconds=1.5)
    assert json.loads(setup.path.read_text()) == record and record["seconds"] == 1.5
    assert record["chosen"] == {"runtime": "torch", "precision": "fp32"} and record["final"] is True
    assert [tn.Verdict.from_record(e).to_record() for e in record["candidates"]] == record["candidates"]
    assert [e["verdict"] for e in record["candidates"]] == [x.verdict for x in decision.verdicts]
    again = tn.load(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names, precisions=only)
    assert again.previous == record and tn.reusable(again)
    for new in ("final", "noisy_judgings", "process"):  # a record written before the noise rule
        del record[new]
    ox.write_json(setup.path, record)
    monkeypatch.setattr(tn, "_PROCESS", "a later start")
    assert tn.reusable(tn.load(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names,
                               precisions=only))


def test_a_decision_inside_the_noise_is_timed_again_then_recorded_as_not_final(tiny_specs, tmp_path, stubs,
                                                                               monkeypatch):
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    runs = {"torch fp32": (0.010, 0.010, 0.010, 0.014, 0.015), "slow fp32": (0.011, 0.011, 0.012, 0.013, 0.013)}
    rounds: list[tuple[str, ...]] = []

    def overlapping(backends, x, repeats=tn.TIMING_REPEATS):
        rounds.append(tuple(backends))
        return {name: tn.Timing(runs[name][:repeats]) for name in backends}

    monkeypatch.setattr(tn, "time_backends", overlapping)
    monkeypatch.setattr(tn, "QUIET_PAUSE_S", 0.0)

    def tournament() -> tn.Outcome:
        return tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path,
                                 runtimes=("torch", "slow"), precisions=("fp32",))

    first = tournament()
    finals = ("torch fp32", "slow fp32")
    assert rounds == [finals] * (1 + tn.QUIET_ROUNDS)  # two candidates: both finalists, timed together
    assert (first.runtime, first.reused) == ("torch", False)  # the best guess serves meanwhile
    assert first.record["final"] is False and first.record["noisy_judgings"] == 1
    assert first.record["noise"] == "slow fp32 may be 1.27x faster than torch fp32 within the quartiles of their 5 runs"
    assert tournament().reused  # the process that judged it does not judge it again at every load
    for n in range(2, tn.MAX_JUDGINGS + 1):
        monkeypatch.setattr(tn, "_PROCESS", f"start {n}")  # a later start judges it again
        again = tournament()
        assert not again.reused and again.record["noisy_judgings"] == n
    monkeypatch.setattr(tn, "_PROCESS", "one more start")
    assert tournament().reused  # inside the noise MAX_JUDGINGS times in a row: a tie, and the record stands


def test_int8_is_not_judged_on_in_memory_weights(tiny_specs, tmp_path):
    spec = tiny_specs["upscale"]
    module = build_generator(spec).eval()  # random init, no file
    outcome = tn.run_tournament(spec, module, None, device="cpu", root=tmp_path)
    v = _verdicts(outcome.record)
    assert v["onnxruntime int8"]["verdict"] == tn.NOT_JUDGED and "trained weights" in v["onnxruntime int8"]["reason"]
    assert v["onnxruntime fp32"]["verdict"] in (tn.CHOSEN, tn.TOO_SLOW) and v["onnxruntime fp32"]["psnr_db"] > 100
    assert not list(ox.model_dir(tmp_path, spec).glob("*.int8.onnx"))


def test_a_named_runtime_with_nothing_that_passes_raises_the_verdicts(tiny_specs, tmp_path, stubs):
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    with pytest.raises(OnnxExportError, match="noisy fp32: too inaccurate"):
        tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=("noisy",))


def test_only_the_fastest_finalists_stay_alive_for_the_interleaved_timing(tiny_specs, tmp_path, monkeypatch):
    monkeypatch.setattr(tn, "FINALISTS", 2)
    alive: weakref.WeakSet = weakref.WeakSet()
    peak = [0]

    def timed_stub(name: str, delay: float) -> Runtime:
        def make(artifacts, *, precision, device, threads):
            backend = Flawed(artifacts.module, name=name, precision=precision, delay=delay)
            alive.add(backend)
            peak[0] = max(peak[0], len(alive))
            return backend

        return Runtime(name=name, offers=("fp32",), available=lambda: True, precisions=lambda device: ("fp32",),
                       make=make, install="")

    names = ("d80", "d40", "d20", "d10")  # judged slowest first, so each new one pushes a slower one out
    for name in names:
        monkeypatch.setitem(RUNTIMES, name, timed_stub(name, int(name[1:]) / 1000))
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    outcome = tn.run_tournament(spec, loaded.module, loaded.source, device="cpu", root=tmp_path, runtimes=names)
    v = _verdicts(json.loads(outcome.record_path.read_text()))
    assert outcome.runtime == "d10" and v["d20 fp32"]["verdict"] == tn.TOO_SLOW
    dropped = sorted(k for k, e in v.items() if "not among the 2 timed again" in e.get("reason", ""))
    assert dropped == ["d40 fp32", "d80 fp32"] and all(v[k]["ms"] >= int(k[1:3]) for k in dropped)
    assert peak[0] <= 3  # the finalists and the candidate being judged, never all four


def test_registry_names_and_precisions(monkeypatch):
    assert BACKENDS[0] == "auto" and {"torch", "onnxruntime", "onnx"} <= set(BACKENDS)
    for runtime in RUNTIMES.values():
        assert runtime.available() and set(runtime.precisions("cpu")) <= set(runtime.offers)
    assert RUNTIMES["onnxruntime"].precisions("cpu") == ("fp32", "int8")
    assert RUNTIMES["openvino"].precisions("cuda") == ()  # OpenVINO runs CUDA devices' models on no GPU
    for bf16, torch_cpu, openvino_cpu in ((True, ("fp32", "bf16"), ("fp32", "bf16", "bf16-subpixel", "int8")),
                                          (False, ("fp32",), ("fp32", "int8"))):  # bf16 only where the CPU has it
        monkeypatch.setattr(cpu, "has_bf16", lambda bf16=bf16: bf16)
        assert RUNTIMES["torch"].precisions("cpu") == torch_cpu
        assert RUNTIMES["openvino"].precisions("cpu") == openvino_cpu
    assert get_runtime("onnx") is RUNTIMES["onnxruntime"]
    with pytest.raises(GanModelsError, match="unknown backend 'tf'; choose one of: auto, torch, onnxruntime"):
        get_runtime("tf")
    monkeypatch.setenv("GAN_STUDIO_BACKEND", "onnx")
    assert requested_backend("auto") == "onnxruntime" and requested_backend("torch") == "torch"


# --- the background switch --------------------------------------------------------------------------------------


def _psnr_u8(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# A whole tournament with its exports, in the background at the lowest priority: 34 s at load 5 on 2 cores, over
# 300 s at load 20. tests/test_app_runtimes.py's fallback switch test covers the same path in the default run.
@pytest.mark.slow
def test_translator_answers_on_torch_then_switches_to_the_chosen_runtime(tmp_path, preparer, monkeypatch):
    spec = make_tiny_model(tmp_path / "model", "upscale", seed=4)
    monkeypatch.delitem(RUNTIMES, "torch")  # only onnxruntime competes, so the switch is certain to happen
    gate = threading.Event()
    real = worker.run_tournament

    def gated(*args, **kwargs):
        assert gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "run_tournament", gated)
    t0 = time.perf_counter()
    translator = translator_for(spec, device="cpu")
    assert time.perf_counter() - t0 < 5 and translator.backend.name == "torch"
    img = rgb_image(40, 28, seed=1)
    first = translator(img)  # answered while the export waits behind the gate
    gate.set()
    job = preparer.submit(load_model(spec), device="cpu")  # the same weights: joins the running job
    assert job.wait(300) and job.error is None
    assert translator.backend.name == "onnxruntime" and translator.backend is job.backend
    later = translator(img)
    assert first.size == later.size and _psnr_u8(first, later) >= 40
    if translator.backend.precision == "fp32":
        assert np.abs(np.asarray(first, np.int16) - np.asarray(later, np.int16)).max() <= 1
    assert translator_for(spec, device="cpu").backend is job.backend  # prepared weights start on the winner


def test_a_failed_preparation_is_remembered_and_never_retried_per_request(tmp_path, preparer, monkeypatch):
    spec = make_tiny_model(tmp_path / "model", "style", seed=5)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("simulated: out of disk space in the export cache")

    monkeypatch.setattr(worker, "run_tournament", failing)
    translator = translator_for(spec, device="cpu")
    job = preparer.submit(load_model(spec), device="cpu")
    assert job.wait(60) and "out of disk space" in job.error and job.backend is None
    for _ in range(3):
        assert translator(rgb_image(32, 32)).size == (32, 32)
    again = translator_for(spec, device="cpu")
    assert again.backend.name == "torch" and calls == [1]
    assert preparer.ready(load_model(spec), device="cpu") is job


def test_the_queue_is_bounded_and_a_refusal_is_not_remembered(tiny_specs, monkeypatch):
    spec = tiny_specs["style"]
    started, release = threading.Event(), threading.Event()

    def blocking(spec, module, source, **kwargs):
        started.set()
        assert release.wait(60)
        return tn.Outcome("torch", "fp32", TorchBackend(module, device="cpu"), {}, tn.Path("unused"), reused=True)

    monkeypatch.setattr(worker, "run_tournament", blocking)
    prep = Preparer(jobs=1, max_queued=1)
    models = [LoadedModel(spec=spec, module=build_generator(spec).eval(), source=None) for _ in range(3)]
    running = prep.submit(models[0], device="cpu")
    assert started.wait(30)
    queued = prep.submit(models[1], device="cpu")
    refused = prep.submit(models[2], device="cpu")
    assert refused.done.is_set() and "queue full" in refused.error and not queued.done.is_set()
    release.set()
    assert running.wait(30) and queued.wait(30) and running.error is None and queued.error is None
    retried = prep.submit(models[2], device="cpu")
    assert retried is not refused and retried.wait(30) and retried.error is None


def test_the_tournament_pauses_while_a_request_runs(tiny_specs, tmp_path, stubs):
    spec = tiny_specs["upscale"]
    loaded = load_model(spec)
    done = threading.Event()
    with activity.serving():
        thread = threading.Thread(target=lambda: (tn.run_tournament(spec, loaded.module, loaded.source, device="cpu",
                                                                    root=tmp_path, runtimes=("torch", "slow")),
                                                  done.set()))
        thread.start()
        time.sleep(0.5)
        assert stubs["slow"] == [] and not done.is_set()  # waiting before its first candidate
    assert done.wait(60) and stubs["slow"] == ["fp32"]


def test_waiting_for_requests_is_bounded():
    with activity.serving(), activity.serving():
        assert activity.requests_running() == 2
        waited = activity.yield_to_requests(max_wait_s=0.2)
    assert 0.2 <= waited < 2 and activity.requests_running() == 0
    assert activity.yield_to_requests() < 0.1  # nothing running: no wait


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_preparation_runs_at_the_lowest_priority_so_requests_come_first(tiny_specs, monkeypatch):
    spec = tiny_specs["upscale"]
    seen: list[int] = []

    def records_priority(spec, module, source, **kwargs):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        raise OnnxExportError("stop here")

    monkeypatch.setattr(worker, "run_tournament", records_priority)
    job = Preparer().submit(LoadedModel(spec=spec, module=build_generator(spec).eval(), source=None), device="cpu")
    assert job.wait(30) and seen == [worker.BACKGROUND_NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the caller's thread is untouched


def test_warm_prepares_a_spec_so_its_first_translator_starts_on_the_winner(tmp_path, monkeypatch):
    spec = make_tiny_model(tmp_path / "model", "upscale", seed=6)
    chosen = []

    def picks_stub(spec, module, source, **kwargs):
        backend = Flawed(module, name="stub", precision="fp32")
        chosen.append(backend)
        return tn.Outcome("stub", "fp32", backend, {}, tn.Path("unused"), reused=False)

    monkeypatch.setattr(worker, "run_tournament", picks_stub)
    prep = Preparer()
    assert prep.warm(spec, device="cpu").wait(60)
    switched = []
    job = prep.submit(load_model(spec), device="cpu", on_ready=switched.append)
    assert job.done.is_set() and switched == chosen and len(chosen) == 1  # at once, no second tournament


def test_export_cli_tournament_prints_verdicts_and_peak_rss(tiny_specs, tmp_path, capsys):
    folder = str(tiny_specs["upscale"].bundled.parent)
    assert export_main([folder, "-o", str(tmp_path), "--tournament", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "tiny-upscale" in out and "chosen" in out and "peak RSS" in out
    assert (tmp_path / "tiny-upscale" / "tournament.cpu.fp32.json").is_file()

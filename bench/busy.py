"""The runtime choice on a busy machine: a competing process, and whether the tournament's pick survives it.

    python -m bench --busy                          # the usual bench while another process burns one core
    python -m bench --picks --busy --threads 2      # every bundled model: tournament, then every candidate timed
    python -m bench --picks --busy --tabs sketch    # one of them (style, sketch, upscale)

--picks, for each bundled model (default-style, default-sketch, default-upscale-x4 from weights/): runs the tournament
from an empty ONNX cache (a temporary folder), then builds every candidate that kept the PSNR bar and times them
interleaved on the tab's 256² input through the Translator (what a request runs), with eager fp32 as the yardstick.
It reports whether the pick is within PICK_SLACK of the fastest candidate (the tournament itself may pick a more
accurate candidate up to AUTO_MIN_SPEEDUP slower, which is the same 10%), and exits 1 when one is not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from bench.procs import stop
from bench.run import PAUSE_S, TABS, load_model, make_path, tab_input

PICK_MODELS = ("style", "sketch", "upscale")  # the tabs of the bundled models
PICK_SLACK = 1.10  # a pick this much slower than the fastest candidate still counts as a good pick
BURN_LIMIT_S = 3600  # the competing process ends by itself after this, or when the bench that started it is gone
# One core's worth of pure-Python work, bounded in time, watching its parent.
_BURN = """
import os, time
end, parent = time.monotonic() + {limit}, os.getppid()
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


@contextlib.contextmanager
def competing(enabled: bool = True) -> Iterator[str]:
    """While the block runs, another process burns one core (pinned to the last CPU this process may use).

    Yields a line describing the competition ("" when `enabled` is False)."""
    if not enabled:
        yield ""
        return
    proc = subprocess.Popen([sys.executable, "-c", _BURN.format(limit=BURN_LIMIT_S)])
    cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    try:
        yield f"a competing process (pid {proc.pid}) burns CPU {cpu if cpu is not None else '(any)'}"
    finally:
        stop(proc, 10)


@dataclass(frozen=True)
class Pick:
    model: str
    chosen: str  # bench path name of the tournament's pick
    final: bool  # the tournament's decision was outside its measured noise
    tournament_s: float
    medians_s: dict[str, float]  # every candidate that kept the PSNR bar, and eager
    psnr_db: dict[str, float]

    @property
    def best(self) -> str:
        return min((p for p in self.medians_s if p != "eager"), key=self.medians_s.__getitem__)

    @property
    def ratio(self) -> float:
        """The pick's time over the fastest candidate's (1.0: the pick is the fastest)."""
        return self.medians_s[self.chosen] / self.medians_s[self.best]

    @property
    def ok(self) -> bool:
        return self.ratio <= PICK_SLACK


def bench_name(runtime: str, precision: str) -> str:
    """The bench's path name of a tournament candidate (onnxruntime int8 -> onnx-int8)."""
    if runtime == "onnxruntime":
        return f"onnx-{precision}"
    if runtime == "torch":
        return "torch" if precision == "fp32" else f"torch-{precision}"
    return f"{runtime}-{precision}"


def judge_and_time(tab_name: str, *, threads: int, repeats: int) -> Pick:
    """One bundled model: its tournament from an empty cache, then every accurate candidate timed, interleaved."""
    from gan_models.pipeline import Translator
    from gan_models.runtimes import RUNTIMES
    from gan_models.runtimes import tournament as tn

    tab = TABS[tab_name]
    spec, module, source, random_init = load_model(tab.model)
    if random_init:
        raise SystemExit(f"{tab.model}: weights/{tab.model}.safetensors is missing; --picks judges the bundled weights")
    with tempfile.TemporaryDirectory(prefix="gan_picks_") as root:
        t0 = time.perf_counter()
        outcome = tn.run_tournament(spec, module, source, device="cpu", threads=threads, root=root, retime=True)
        tournament_s = time.perf_counter() - t0
        record = outcome.record
        final = bool(record.get("final", True))
        print(f"  {tab.model}: tournament in {tournament_s:.0f} s picked {outcome.runtime} {outcome.precision} "
              f"({'final' if final else 'not final: ' + record['noise']}); its times: "
              + ", ".join(f"{c['runtime']} {c['precision']} {c['ms']} ms {c['ms_spread']}"
                          for c in record["candidates"] if "ms" in c), file=sys.stderr)
        del outcome  # its backend is built again below, like every other candidate
        artifacts = tn.load(spec, module, source, device="cpu", threads=threads, root=root).artifacts
        accurate = [v for v in map(tn.Verdict.from_record, record["candidates"])
                    if v.verdict in (tn.CHOSEN, tn.TOO_SLOW)]
        chosen = next(bench_name(v.runtime, v.precision) for v in accurate if v.verdict == tn.CHOSEN)
        x = tab_input(tab, spec.value_range)
        runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {"eager": make_path("eager", spec, module, {}, threads)}
        for v in accurate:
            translator = Translator(spec, RUNTIMES[v.runtime].make(artifacts, precision=v.precision, device="cpu",
                                                                   threads=threads))
            runs[bench_name(v.runtime, v.precision)] = partial(translator.run_array, tile="auto")
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():
            fn(x)  # warm-up
        for _ in range(repeats):
            for name, fn in runs.items():  # interleaved: the load lands on every candidate alike
                time.sleep(PAUSE_S)
                t = time.perf_counter()
                fn(x)
                seconds[name].append(time.perf_counter() - t)
    return Pick(tab.model, chosen, final, tournament_s, {k: float(np.median(v)) for k, v in seconds.items()},
                {bench_name(v.runtime, v.precision): v.psnr_db for v in accurate if v.psnr_db is not None})


def format_picks(picks: list[Pick]) -> str:
    lines = ["| model | candidate | median ms | vs eager | vs fastest | PSNR vs fp32 | |",
             "|---|---|---:|---:|---:|---:|---|"]
    for pick in picks:
        medians = pick.medians_s
        fastest = medians[pick.best]
        for name in sorted(medians, key=medians.__getitem__):
            mark = "**pick**" if name == pick.chosen else ("fastest" if name == pick.best else "")
            psnr = pick.psnr_db.get(name)
            psnr_text = "ref" if name == "eager" else ("inf" if psnr == float("inf") else f"{psnr:.1f} dB")
            vs_best = "" if name == "eager" else f"{medians[name] / fastest:.2f}x"
            lines.append(f"| {pick.model} | {name} | {medians[name] * 1000:.0f} | "
                         f"{medians['eager'] / medians[name]:.2f}x | {vs_best} | {psnr_text} | {mark} |")
    lines += ["", "| model | pick | fastest | pick / fastest | within 10% | decision | tournament |",
              "|---|---|---|---:|---|---|---:|"]
    for pick in picks:
        lines.append(f"| {pick.model} | {pick.chosen} | {pick.best} | {pick.ratio:.2f} | "
                     f"{'yes' if pick.ok else 'NO'} | {'final' if pick.final else 'not final'} | "
                     f"{pick.tournament_s:.0f} s |")
    return "\n".join(lines)


def run_picks(args: argparse.Namespace) -> int:
    """--picks: every bundled model's tournament and candidates, under the competition --busy asks for."""
    import torch

    from gan_models.runtimes.cpu import cpu_signature

    torch.set_num_threads(args.threads)
    repeats = args.repeats or 7
    picks = []
    with competing(args.busy) as competition:
        print(f"CPU: {cpu_signature()}")
        print(f"threads {args.threads}, {repeats} interleaved runs per candidate, "
              f"{competition or 'no competing process'}; load average at start {os.getloadavg()[0]:.2f}")
        for name in [t for t in args.tabs if t in PICK_MODELS] or PICK_MODELS:
            picks.append(judge_and_time(name, threads=args.threads, repeats=repeats))
        print(f"load average at end {os.getloadavg()[0]:.2f}")
    print()
    print(format_picks(picks))
    return 0 if all(p.ok for p in picks) else 1

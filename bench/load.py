"""Load test of the app: a burst of concurrent gradio_client requests mixed across the three model endpoints.

    python -m bench.load                                   # app in a subprocess with tiny seeded models, 50 requests
    python -m bench.load --requests 200 --concurrency 2 --queue-size 256
    python -m bench.load --url http://127.0.0.1:7860 --pid 12345   # a running app (its own models); RSS of that pid

Every answer is checked (output size), the server's resident memory (the process and its children) is sampled with
psutil while the burst runs, and afterwards the server must still answer one request per endpoint. With the tiny
server, model runs in flight are counted inside the server, which shows the queue's concurrency limit holding.
Prints latency p50/p95/max, peak RSS and throughput; exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from bench.procs import stop

ROOT = Path(__file__).resolve().parents[1]

ENDPOINTS = ("/style_transfer", "/sketch_to_photo", "/upscale")
TASK_OF = {"/style_transfer": "style", "/sketch_to_photo": "sketch2photo", "/upscale": "upscale"}
UPSCALE_OUTSCALE = 2
# Tiny networks with the real key layouts: the load test measures the server, not the model.
TINY_MODELS: dict[str, dict[str, Any]] = {
    "style": {"arch": "resnet_generator", "arch_kwargs": {"ngf": 8, "n_blocks": 2}, "value_range": [-1, 1],
              "scale": 1, "size_multiple": 4, "tile": None},
    "sketch2photo": {"arch": "unet_generator", "arch_kwargs": {"ngf": 8, "num_downs": 5, "norm": "instance"},
                     "value_range": [-1, 1], "scale": 1, "size_multiple": 32, "tile": None, "input_size": 64},
    "upscale": {"arch": "srvgg_compact", "arch_kwargs": {"num_feat": 8, "num_conv": 2, "upscale": 4},
                "value_range": [0, 1], "scale": 4, "size_multiple": 1, "tile": 32, "tile_overlap": 8},
}


@dataclass
class LoadReport:
    """What one burst did. Memory in MiB; None where it was not measured (no pid, or an outside server)."""

    requests: int
    concurrency: int | None
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rss_before_mb: float | None = None
    rss_peak_mb: float | None = None
    rss_after_mb: float | None = None
    peak_in_flight: int | None = None
    still_serving: bool = False

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    def summary(self) -> str:
        mem = "not measured" if self.rss_peak_mb is None else (
            f"before {self.rss_before_mb:.0f} MiB, peak {self.rss_peak_mb:.0f} MiB, after {self.rss_after_mb:.0f} MiB")
        flight = "" if self.peak_in_flight is None else (
            f"\nmodel runs in flight: peak {self.peak_in_flight} (queue limit {self.concurrency})")
        lines = [
            f"{self.ok}/{self.requests} requests answered correctly in {self.wall_s:.1f} s "
            f"({self.ok / self.wall_s if self.wall_s else 0:.1f} req/s)",
            f"latency: p50 {self.percentile(50):.2f} s, p95 {self.percentile(95):.2f} s, "
            f"max {max(self.latencies_s, default=float('nan')):.2f} s",
            f"server RSS: {mem}{flight}",
            f"server answers after the burst: {'yes' if self.still_serving else 'NO'}",
        ]
        lines += [f"FAILED: {f}" for f in self.failures[:10]]
        if len(self.failures) > 10:
            lines.append(f"... and {len(self.failures) - 10} more failures")
        return "\n".join(lines)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (Gradio may start helpers)."""
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


class RssSampler:
    """Samples `tree_rss(pid)` in a background thread; `peak` is the largest value seen."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = tree_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, tree_rss(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_inputs(folder: Path) -> dict[str, Path]:
    """One small image per endpoint: a photo-like picture and a black-on-white sketch."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    photo = np.stack([xx / 63, yy / 47, 0.5 + 0.5 * np.sin((xx + yy) / 5)], axis=-1)
    Image.fromarray((photo * 255).astype(np.uint8)).save(folder / "photo.png")
    sketch = Image.new("RGB", (96, 64), "white")
    sketch.paste((0, 0, 0), (10, 10, 86, 13))
    sketch.paste((0, 0, 0), (46, 10, 49, 58))
    sketch.save(folder / "sketch.png")
    return {"/style_transfer": folder / "photo.png", "/sketch_to_photo": folder / "sketch.png",
            "/upscale": folder / "photo.png"}


def pick_models(client: Any) -> dict[str, dict[str, Any]]:
    """The /models row used for each endpoint: the first available model of its task, bundled ones first."""
    rows = [r for r in client.predict(api_name="/models") if r["available"]]
    chosen = {}
    for endpoint, task in TASK_OF.items():
        candidates = sorted((r for r in rows if r["task"] == task), key=lambda r: not r["bundled"])
        if not candidates:
            raise RuntimeError(f"the server offers no available {task} model")
        chosen[endpoint] = candidates[0]
    return chosen


def expected_size(endpoint: str, size: tuple[int, int], model: dict[str, Any]) -> tuple[int, int]:
    """Output size the app must return for an input of `size` (W, H) (app defaults: originals well under caps)."""
    w, h = size
    if endpoint == "/upscale":
        return w * UPSCALE_OUTSCALE, h * UPSCALE_OUTSCALE
    if endpoint == "/sketch_to_photo" and model.get("input_size"):
        k = model["input_size"] / min(w, h)  # short side to the training size; our inputs are far from MAX_ASPECT
        return round(w * k), round(h * k)
    return w, h


def request(client: Any, endpoint: str, path: Path, model: dict[str, Any]) -> Image.Image:
    """One call through gradio_client; returns the full-size result image."""
    from gradio_client import handle_file

    if endpoint == "/style_transfer":
        out, _ = client.predict(handle_file(path), model["id"], "original", api_name=endpoint)
    elif endpoint == "/sketch_to_photo":
        canvas = {"background": handle_file(path), "layers": [], "composite": None}
        out, _ = client.predict(canvas, model["id"], True, api_name=endpoint)
    else:
        _, out, _ = client.predict(handle_file(path), model["id"], UPSCALE_OUTSCALE, "auto", api_name=endpoint)
    with Image.open(out) as img:
        img.load()
        return img


def run_load(
    url: str,
    *,
    requests: int = 50,
    pid: int | None = None,
    concurrency: int | None = None,
    stats_file: Path | None = None,
    timeout_s: float = 120.0,
    workdir: Path | None = None,
) -> LoadReport:
    """Fire `requests` concurrent requests (endpoints in turn) at the app at `url` and check every answer.

    Parameters:
        url: the app's address.
        requests: how many requests, all submitted at once.
        pid: the server's process id, for RSS sampling; None skips memory.
        concurrency: the server's model concurrency limit, for the report.
        stats_file: JSON written by a `--serve` server with its peak model runs in flight.
        timeout_s: the whole burst must finish within this; late requests count as failures.
        workdir: where inputs and downloads go (a temporary folder by default).
    """
    from gradio_client import Client

    report = LoadReport(requests=requests, concurrency=concurrency)
    with contextlib.ExitStack() as stack:
        work = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gan-load-")))
        inputs = make_inputs(work / "inputs")
        client = Client(url, verbose=False, download_files=str(work / "downloads"), max_workers=requests)
        models = pick_models(client)

        def one(endpoint: str) -> float:
            start = time.perf_counter()
            img = request(client, endpoint, inputs[endpoint], models[endpoint])
            with Image.open(inputs[endpoint]) as src:
                want = expected_size(endpoint, src.size, models[endpoint])
            if img.size != want:
                raise AssertionError(f"{endpoint} returned {img.size}, expected {want}")
            return time.perf_counter() - start

        for endpoint in ENDPOINTS:  # warm-up: models load on first use, which is not what this measures
            one(endpoint)
        if pid is None:
            _burst(one, report, timeout_s)
        else:
            report.rss_before_mb = tree_rss(pid) / 2**20
            with RssSampler(pid) as sampler:
                _burst(one, report, timeout_s)
            report.rss_peak_mb = sampler.peak / 2**20
        try:
            for endpoint in ENDPOINTS:
                one(endpoint)
            report.still_serving = True
        except Exception as exc:  # noqa: BLE001 - any failure here is the finding, reported as such
            report.failures.append(f"after the burst: {type(exc).__name__}: {exc}")
        if pid is not None:
            report.rss_after_mb = tree_rss(pid) / 2**20
    if stats_file is not None and stats_file.is_file():
        report.peak_in_flight = json.loads(stats_file.read_text())["peak_in_flight"]
    return report


def _burst(one: Callable[[str], float], report: LoadReport, timeout_s: float) -> None:
    """Submit all requests at once (endpoints in turn), wait at most `timeout_s`, record latencies and failures."""
    pool = ThreadPoolExecutor(max_workers=report.requests, thread_name_prefix="load")
    start = time.perf_counter()
    futures = {pool.submit(one, ENDPOINTS[i % len(ENDPOINTS)]): ENDPOINTS[i % len(ENDPOINTS)]
               for i in range(report.requests)}
    done, late = wait(futures, timeout=timeout_s)
    report.wall_s = time.perf_counter() - start
    pool.shutdown(wait=False, cancel_futures=True)  # late requests are failures; do not wait for them here
    for future in done:
        exc = future.exception()
        if exc is None:
            report.latencies_s.append(future.result())
        else:
            report.failures.append(f"{futures[future]}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    report.failures += [f"{futures[f]}: no answer within {timeout_s:.0f} s" for f in late]


# --- the tiny server ------------------------------------------------------------------------------------------------


def write_tiny_models(folder: Path) -> dict[str, Path]:
    """Seeded random-init models, one per task, written as train.py output folders; returns their folders."""
    import torch

    from gan_models.specs import ModelSpec
    from gan_models.weights import build_generator, save_model_folder

    folders = {}
    for task, fields in TINY_MODELS.items():
        spec_fields = {"id": f"tiny-{task}", "title": f"Tiny {task}", "task": task, "licence": "test", **fields}
        torch.manual_seed(0)
        spec = ModelSpec(**{**spec_fields, "value_range": tuple(fields["value_range"])})
        folders[task] = save_model_folder(build_generator(spec), folder / task, spec_fields=spec_fields)
    return folders


def serve(models: Path, *, port: int, concurrency: int, queue_size: int, stats_file: Path | None) -> None:
    """Run the app on 127.0.0.1:`port` with the tiny models in `models` (blocks); the Hub is not used."""
    import app
    from gan_models import pipeline
    from gan_models.specs import spec_from_config

    specs = {s.id: s for s in (spec_from_config(p) for p in sorted(models.iterdir()) if p.is_dir())}
    config = app.Settings.from_env({**os.environ, "GAN_STUDIO_CONCURRENCY": str(concurrency),
                                     "GAN_STUDIO_QUEUE_SIZE": str(queue_size)})
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)  # as app.main does: concurrent runs share the cores
    if stats_file is not None:
        _count_runs_in_flight(pipeline.Translator, stats_file)
    demo = app.build_demo(specs=specs, config=config)
    demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, **app.launch_options(config))


def _count_runs_in_flight(translator_cls: type, stats_file: Path) -> None:
    # Instrumentation for this benchmark only: wrap Translator.run_array (once per request) to record how many
    # model runs overlap, which is what the queue's concurrency limit is meant to bound.
    original: Callable[..., Any] = translator_cls.run_array
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            state["now"] += 1
            if state["now"] > state["peak"]:
                state["peak"] = state["now"]
                stats_file.write_text(json.dumps({"peak_in_flight": state["peak"]}))
        try:
            return original(self, *args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    translator_cls.run_array = counted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    concurrency: int
    stats_file: Path


@contextlib.contextmanager
def tiny_server(workdir: Path, *, concurrency: int = 2, queue_size: int = 64, start_timeout_s: float = 120.0
                ) -> Iterator[Server]:
    """`python -m bench.load --serve` in a subprocess (so its memory is its own), stopped on exit."""
    write_tiny_models(workdir / "models")
    port = free_port()
    stats = workdir / "server_stats.json"
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed below, after the process
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HOME": str(workdir / "hf")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.load", "--serve", str(workdir / "models"), "--port", str(port),
         "--concurrency", str(concurrency), "--queue-size", str(queue_size), "--stats", str(stats)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"server did not start: {(workdir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Server(url=url, pid=proc.pid, concurrency=concurrency, stats_file=stats)
    finally:
        stop(proc, 20)
        log.close()


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="concurrent requests in the burst (default: 50)")
    parser.add_argument("--concurrency", type=int, default=2, help="tiny server: model runs at once (default: 2)")
    parser.add_argument("--queue-size", type=int, default=64,
                        help="tiny server: waiting requests before refusing (default: 64; keep >= --requests)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the whole burst may take")
    parser.add_argument("--url", help="load a running app instead of starting the tiny one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its RSS")
    parser.add_argument("--serve", type=Path, metavar="MODELS", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve is not None:
        serve(args.serve, port=args.port, concurrency=args.concurrency, queue_size=args.queue_size,
              stats_file=args.stats)
        return 0
    if args.url:
        report = run_load(args.url, requests=args.requests, pid=args.pid, timeout_s=args.timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="gan-load-") as tmp, \
                tiny_server(Path(tmp), concurrency=args.concurrency, queue_size=args.queue_size) as server:
            report = run_load(server.url, requests=args.requests, pid=server.pid, concurrency=server.concurrency,
                              stats_file=server.stats_file, timeout_s=args.timeout, workdir=Path(tmp))
    print(report.summary())
    return 0 if not report.failures and report.still_serving else 1


if __name__ == "__main__":
    sys.exit(main())

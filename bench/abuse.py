"""A hostile visitor against a live app on loopback: every case's outcome and the app's peak RSS.

    python -m bench.abuse                          # this checkout's app.py
    python -m bench.abuse --repo /tmp/abuse-main   # another checkout's (the "before" column)
    python -m bench.abuse --heavy --budget-mb 4096 --only "4 MP"   # the documented upscale limit: 4 MP at x4

Starts `python app.py` from `--repo` with tiny settings (GAN_STUDIO_MAX_WEIGHTS_MB=5, a request budget of
`--budget-mb`, backend torch, the Hub offline with a fake Hub cache holding one tiny x4 model at probe/tiny-x4/x4.pth)
and an RSS watchdog that kills the app past `--kill-mb` (the case then reads "killed by the watchdog" and the app is
started again). Each case is one API call through gradio_client; after it the app must answer /models. Hostile files
are written the way their publishers' code saves them (torch.save of a state dict, safetensors' save_file).
Prints one row per case: outcome (first line), seconds, peak RSS over the app's RSS before the case, and whether
the next request was answered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import stop

REPO = Path(__file__).resolve().parents[1]
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"
HUB_MODEL = "probe/tiny-x4/x4.pth"


@dataclass
class Result:
    case: str
    outcome: str
    seconds: float
    peak_mb: float  # peak RSS over the RSS before the case
    answered_next: bool


class Watchdog:
    """Polls a process's RSS every 20 ms; kills it past `kill_bytes`. `peak` since the last `reset`."""

    def __init__(self, pid: int, kill_bytes: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.kill_bytes = kill_bytes
        self.killed = False
        self.peak = self.base = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        try:
            return self.process.memory_info().rss
        except Exception:  # noqa: BLE001 - gone: nothing more to measure
            return 0

    def reset(self) -> None:
        self.peak = self.base = self.rss()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            rss = self.rss()
            self.peak = max(self.peak, rss)
            if rss > self.kill_bytes and not self.killed:
                self.killed = True
                self.process.kill()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_files(folder: Path) -> dict[str, Path]:
    """The fake Hub cache (HF_HOME) and every hostile file, in `folder`."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO))
    from gan_models.archs import build_arch

    def srvgg(upscale: int, feat: int, convs: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        return build_arch("srvgg_compact", num_in_ch=3, num_out_ch=3, num_feat=feat, num_conv=convs, upscale=upscale,
                          act_type="prelu").state_dict()

    snapshot = folder / "hf" / "hub" / "models--probe--tiny-x4" / "snapshots" / FAKE_SHA
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(FAKE_SHA)
    torch.save(srvgg(4, 16, 2), snapshot / "x4.pth")  # Real-ESRGAN's training code saves a plain state dict
    files = {"x64": folder / "x64.pth"}
    torch.save(srvgg(64, 4, 1), files["x64"])
    files["x64_again"] = folder / "renamed.pth"
    files["x64_again"].write_bytes(files["x64"].read_bytes())
    files["blocks"] = folder / "body20002.pth"
    state = srvgg(4, 4, 1)
    torch.save({"body.0.weight": state["body.0.weight"], "body.1.weight": state["body.1.weight"],
                "body.20002.weight": state["body.4.weight"]}, files["blocks"])
    files["tiny_tensors"] = folder / "16k.safetensors"
    save_file({f"g{i}.weight": torch.zeros(1) for i in range(16384)}, str(files["tiny_tensors"]))
    header = json.dumps({"__metadata__": {"pad": "x" * (4 * 2**20)},
                         "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    files["header"] = folder / "header.safetensors"
    files["header"].write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    files["small"] = folder / "small.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(files["small"])
    files["px100"] = folder / "px100.png"
    Image.fromarray((np.random.default_rng(1).random((100, 100, 3)) * 255).astype(np.uint8)).save(files["px100"])
    files["bomb"] = folder / "sketch49mp.png"
    Image.new("L", (7000, 7000), 255).save(files["bomb"], optimize=True)
    files["4mp"] = folder / "4mp.png"
    Image.fromarray((np.random.default_rng(2).random((2000, 2000, 3)) * 255).astype(np.uint8)).save(files["4mp"])
    return files


@contextlib.contextmanager
def live_app(repo: Path, folder: Path, *, budget_mb: int, kill_mb: int) -> Iterator[tuple[str, Watchdog, Any]]:
    """`python app.py` from `repo` on a free loopback port; yields (url, watchdog, process)."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GAN_STUDIO_MAX_WEIGHTS_MB": "5", "GAN_STUDIO_REQUEST_MEMORY_MB": str(budget_mb),
           "GAN_STUDIO_BACKEND": "torch", "GAN_STUDIO_THREADS": "2", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(folder / "hf"), "XDG_CACHE_HOME": str(folder / "cache"), "GRADIO_ANALYTICS_ENABLED": "0",
           "GRADIO_TEMP_DIR": str(folder / "gradio"), "PYTHONPATH": str(repo)}
    env.pop("HF_HUB_CACHE", None)
    log = open(folder / f"app-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "app.py"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with {process.returncode}; see {log.name}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not start within 180 s")
            time.sleep(0.5)
        watchdog = Watchdog(process.pid, kill_mb * 2**20)
        try:
            yield url, watchdog, process
        finally:
            watchdog.stop()
    finally:
        stop(process, 20)
        log.close()


def cases(files: dict[str, Path], *, heavy: bool) -> list[tuple[str, str, Callable[[Any], list]]]:
    """(name, endpoint, args(handle_file)) of every case."""
    up = "/upscale"
    rows: list[tuple[str, str, Callable[[Any], list]]] = [
        ("?multiple=2000 on 40x40", up, lambda f: [f(files["small"]), f"{HUB_MODEL}?multiple=2000", 4, "auto", None]),
        ("?tile=2000", up, lambda f: [f(files["small"]), f"{HUB_MODEL}?tile=2000", 4, "auto", None]),
        ("?scale=1000", up, lambda f: [f(files["small"]), f"{HUB_MODEL}?scale=1000", 4, "auto", None]),
        ("?range=0,inf", up, lambda f: [f(files["small"]), f"{HUB_MODEL}?range=0,inf", 4, "auto", None]),
        ("?tile=64&tile=2000", up, lambda f: [f(files["small"]), f"{HUB_MODEL}?tile=64&tile=2000", 4, "auto",
                                                None]),
        ("owner/name//etc/passwd.pth", up, lambda f: [f(files["small"]), "owner/name//etc/passwd.pth", 4, "auto",
                                                        None]),
        ("x64 SRVGG upload on 100 px", up, lambda f: [f(files["px100"]), "custom", 4, "auto", f(files["x64"])]),
        ("same x64 file again, renamed", up, lambda f: [f(files["px100"]), "custom", 4, "auto",
                                                         f(files["x64_again"])]),
        ("file declaring body.20002", up, lambda f: [f(files["small"]), "custom", 4, "auto", f(files["blocks"])]),
        ("16k tiny tensors", up, lambda f: [f(files["small"]), "custom", 4, "auto", f(files["tiny_tensors"])]),
        ("4 MB safetensors header", up, lambda f: [f(files["small"]), "custom", 4, "auto", f(files["header"])]),
        ("canvas: 12 layers -> one 49 MP upload", "/sketch_to_photo",
         lambda f: [{"background": None, "layers": [f(files["bomb"])] * 12, "composite": f(files["bomb"])},
                    "default-sketch", True, None]),
    ]
    if heavy:
        rows += [
            ("4 MP at x4, tile auto", up, lambda f: [f(files["4mp"]), "default-upscale-x4", 4, "auto", None]),
            ("4 MP at x4, tile none", up, lambda f: [f(files["4mp"]), "default-upscale-x4", 4, "none", None]),
        ]
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def run_case(url: str, watchdog: Watchdog, endpoint: str, args: Callable[[Any], list], *,
             timeout_s: float) -> tuple[str, float, float, bool]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    watchdog.reset()
    start = time.perf_counter()
    job = client.submit(*args(handle_file), api_name=endpoint)
    try:
        result = job.result(timeout=timeout_s)
        outcome = "ok: " + _first_line(Exception(json.dumps(result, default=str)))
    except Exception as exc:  # noqa: BLE001 - the outcome is what we report
        outcome = "killed by the watchdog" if watchdog.killed else _first_line(exc)
    seconds = time.perf_counter() - start
    time.sleep(0.5)  # what the request set off in the background shows up in RSS too
    peak = (watchdog.peak - watchdog.base) / 2**20
    answered = False
    if not watchdog.killed:
        try:
            answered = isinstance(client.predict(api_name="/models"), list)
        except Exception:  # noqa: BLE001
            answered = False
    return outcome, seconds, peak, answered


def privacy(url: str, files: dict[str, Path]) -> list[str]:
    """What a second visitor sees of a first visitor's failed upload: leaked names and paths, and whether the file
    can be fetched through Gradio's file route."""
    import httpx
    from gradio_client import Client, handle_file

    first = Client(url, verbose=False, download_files=False)
    with contextlib.suppress(Exception):
        first.predict(handle_file(files["small"]), "custom", 4, "auto", handle_file(files["blocks"]),
                      api_name="/upscale")
    second = Client(url, verbose=False, download_files=False)
    rows = json.dumps(second.predict(api_name="/models"))
    runtime = json.dumps(second.predict(api_name="/runtime")) if "/runtime" in second.view_api(
        print_info=False, return_format="dict")["named_endpoints"] else ""
    leaks = []
    if "body20002" in rows:
        leaks.append("another visitor's upload listed at /models")
    for text in (rows, runtime):
        for word in text.replace('"', " ").replace("`", " ").split():
            if word.startswith("/") and word.count("/") > 1:
                leaks.append(f"server path shown: {word[:80]}")
                if "body20002" in word:
                    path = word.rstrip(":,.;)")
                    status = httpx.get(f"{url}gradio_api/file={path}", timeout=10).status_code
                    leaks.append(f"GET its file route: HTTP {status}")
    return leaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app.py runs (default: this one)")
    parser.add_argument("--budget-mb", type=int, default=1024, help="GAN_STUDIO_REQUEST_MEMORY_MB of the app")
    parser.add_argument("--kill-mb", type=int, default=6144, help="the watchdog kills the app past this RSS")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per case")
    parser.add_argument("--heavy", action="store_true", help="also 4 MP at x4 (minutes on a busy CPU)")
    parser.add_argument("--only", nargs="+", default=[], metavar="TEXT", help="only the cases whose name holds one "
                                                                                "of these")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gan-abuse-") as tmp:
        folder = Path(tmp)
        files = write_files(folder)
        todo = [c for c in cases(files, heavy=args.heavy) if not args.only or any(t in c[0] for t in args.only)]
        while todo:
            with live_app(args.repo.resolve(), folder, budget_mb=args.budget_mb, kill_mb=args.kill_mb) as (
                    url, watchdog, _):
                if not results:
                    print(f"app RSS at start: {watchdog.rss() / 2**20:.0f} MB ({args.repo})", flush=True)
                    leaks = privacy(url, files)
                    print("privacy: " + ("; ".join(leaks) if leaks else "no other visitor's file, no server path"),
                          flush=True)
                while todo and not watchdog.killed:
                    name, endpoint, make = todo.pop(0)
                    outcome, seconds, peak, answered = run_case(url, watchdog, endpoint, make,
                                                                timeout_s=args.timeout)
                    results.append(Result(name, outcome, seconds, peak, answered))
                    print(f"| {name} | {outcome} | {seconds:.1f} s | +{peak:.0f} MB | "
                          f"{'answers' if answered else 'DOWN'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A cold app: start `python app.py` with an empty ONNX cache and time each tab's first request, then later ones.

    HF_HUB_OFFLINE=1 python -m bench.cold                    # backend auto: first requests on torch, then the choice
    HF_HUB_OFFLINE=1 python -m bench.cold --backend torch    # nothing prepared in the background
    HF_HUB_OFFLINE=1 python -m bench.cold --wait 45 --port 7861

Prints the seconds until the server listens, each request's seconds and the path it ran (from the info line), and
the app's peak RSS. Talks to 127.0.0.1 only; the app is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _requests(client: Client, image: Path) -> dict:
    sketch = {"background": handle_file(str(REPO / "examples" / "shoe_sketch.png")), "layers": [], "composite": None}
    photo = handle_file(str(image))
    return {
        "style": lambda: client.predict(photo, "default-style", "original", api_name="/style_transfer"),
        "sketch": lambda: client.predict(sketch, "default-sketch", True, api_name="/sketch_to_photo"),
        "upscale": lambda: client.predict(photo, "default-upscale-x4", 4, "auto", api_name="/upscale"),
    }


def _round(label: str, calls: dict) -> None:
    for name, call in calls.items():
        start = time.perf_counter()
        info = call()[-1]
        path = info.split("·")[1].strip() if "·" in info else info[:80]
        print(f"{label:>10} {name:<8} {time.perf_counter() - start:6.2f} s  ({path})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", help="GAN_STUDIO_BACKEND for the app (default auto)")
    parser.add_argument("--wait", type=float, default=45.0, help="seconds between the first and the second round")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--side", type=int, default=256, help="input size of the style and upscale requests")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gan-cold-"))
    env = {**os.environ, "GAN_STUDIO_ONNX_CACHE": str(tmp / "onnx"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(args.port), "GRADIO_ANALYTICS_ENABLED": "False",
           "GAN_STUDIO_BACKEND": args.backend}
    image = tmp / "in.png"
    rgb = np.random.default_rng(0).random((args.side, args.side, 3)) * 255
    Image.fromarray(rgb.astype(np.uint8)).save(image)
    start = time.perf_counter()
    with open(tmp / "app.log", "w") as log:
        app = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        deadline = start + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=0.2).close()
                break
            except OSError:
                if app.poll() is not None or time.perf_counter() > deadline:
                    print(f"the app did not start; see {tmp / 'app.log'}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        print(f"server listening after {time.perf_counter() - start:.1f} s (backend {args.backend})")
        calls = _requests(Client(f"http://127.0.0.1:{args.port}/", verbose=False), image)
        _round("first", calls)
        time.sleep(args.wait)
        _round(f"+{args.wait:g} s", calls)
        status = Path(f"/proc/{app.pid}/status").read_text().splitlines()
        peak = next(line for line in status if line.startswith("VmHWM"))
        print(f"app peak RSS {int(peak.split()[1]) / 1024:.0f} MB")
    finally:
        app.terminate()
        app.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

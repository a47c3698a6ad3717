"""Boot the app as a ZeroGPU Space would, with the real `spaces` package, and make GPU calls through it.

    SPACES_ZERO_GPU=true SPACES_ZERO_DEVICE_API_URL=http://127.0.0.1:PORT/ ... python -m tests.emulate_zerogpu IMAGE

Run by tests/test_zerogpu.py in a subprocess (the package patches torch process-wide), against the fake device API
that test serves on loopback. As on a Space, `spaces` is imported first and app.main() starts the app; launch() is
made non-blocking so that this script can then, like visitors, call the upscale handler (a GPU call: scheduled
through the device API, run in a forked worker) and read /models. This machine has no GPU: the package's CUDA
initialisation in the worker is replaced by nothing and the call runs its model on the CPU (zerogpu.DEVICE); the
rest (the patched torch in the main process, scheduling, the fork, pickling both ways, release) is the package's.

Prints one line "RESULT <json>" at the end.
"""

from __future__ import annotations

import json
import sys
import threading

import gradio as gr
import spaces  # first, before anything touches CUDA, as on a Space
import spaces.zero.torch as zero_torch

import app
from gan_models import zerogpu

zero_torch.init = lambda nvidia_uuid: None  # no GPU here: nothing to initialise or move to
zero_torch.move = lambda callback=None: None
zerogpu.DEVICE = "cpu"

launched: list[gr.Blocks] = []
spaces_launch = gr.Blocks.launch  # the package's wrapper: its start-up report, then Gradio's launch


def launch(self: gr.Blocks, *args: object, **kwargs: object) -> object:
    launched.append(self)
    return spaces_launch(self, *args, **{**kwargs, "prevent_thread_lock": True, "quiet": True})


def fn(demo: gr.Blocks, api_name: str):
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def outcome(call) -> dict[str, object]:
    try:
        value = call()
    except gr.Error as exc:
        return {"error": exc.message}
    return {"value": value}


def main(image: str, big_image: str) -> None:
    assert spaces.config.Config.zero_gpu and zerogpu.active()
    gr.Blocks.launch = launch
    app.main([])
    demo = launched[0]
    try:
        for thread in threading.enumerate():
            if thread.name == "warm-defaults":
                thread.join(120)
        upscale, models = fn(demo, "upscale"), fn(demo, "models")
        result = {
            "ok": outcome(lambda: upscale(image, "default-upscale-x4", 2, "auto", None)),
            "first": models(),
            "again": outcome(lambda: upscale(image, "default-upscale-x4", 4, "auto", None)),
            "second": models(),
            "custom": outcome(lambda: upscale(image, "someone/not-cached/model.pth", 4, "auto", None)),
            "too_large": outcome(lambda: upscale(big_image, "default-upscale-x4", 4, "auto", None)),
            "models": models(),
            "runtime": fn(demo, "runtime")(),
        }
    finally:
        demo.close()
    ok = result["ok"].get("value")
    if ok is not None:
        result["ok"]["value"] = {"file": ok[1], "info": ok[2]}
    result["again"].pop("value", None)
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])

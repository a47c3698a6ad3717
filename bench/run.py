"""Speed and memory of every inference path, side by side on the same inputs, in one run.

    python -m bench                              # every tab, 1 warm-up + 5 timed runs per path
    python -m bench --quick                      # 3 runs; fewer rows; the 2048² tab runs eager + default only
    python -m bench --tabs style upscale --repeats 10 --threads 2 --json bench.json
    HF_HUB_OFFLINE=1 python -m bench --hub-archs --threads 2   # + the Hub architectures at their real sizes
    python -m bench --busy                       # while a competing process burns one core (bench/busy.py)
    python -m bench --picks --busy               # does each bundled model's tournament pick hold on a busy machine?

Tabs (one model per app tab, the bundled defaults; random-init weights of the same architecture, with a notice,
when a file in weights/ is missing):
    style         default-style       256² → 256²      whole image (InstanceNorm nets are not tiled)
    sketch        default-sketch      256² → 256²
    upscale       default-upscale-x4  256² → 1024²
    upscale-2048  default-upscale-x4  2048² → 8192²    tiled (the Translator's auto tile); each path in its own
                                                       process so its peak RSS (VmHWM) is its own
Hub architectures (with --hub-archs, or by name in --tabs): the Hub checkpoint when it is in the local cache, else
random-init weights of the same architecture (same speed; PSNR of reduced precisions is then only indicative):
    hub-style     style-monet (ResNet-9, ngf 64)        512² → 512²
    hub-sketch    edges2shoes (huggan U-Net)             256² → 256²
    hub-esrgan    realesrgan-x4plus (RRDBNet, 23 blocks) 128² → 512²
    hub-srgan     srgan-x4 (SRResNet, 16 blocks)         128² → 512²
Paths:
    eager         `with torch.no_grad(): model(x)` on the whole NCHW tensor, fp32: what reference repos run
    torch         our torch path: Translator + TorchBackend (pads, tiles when auto says so)
    onnx-fp32     Translator + OnnxBackend, the fp32 export
    onnx-int8     Translator + OnnxBackend, static QDQ int8 (the CPU reduced-precision candidate)
    onnx-fp16     Translator + OnnxBackend, fp16 export (the CUDA candidate; shown to be slow on CPU)
    torch-bf16    Translator + TorchBf16Backend: CPU autocast(bfloat16), channels_last (needs AVX512_BF16/AMX)
    torch-bf16-compile   the same under torch.compile, compiled before timing (only when named in --paths)
    openvino-fp32 Translator + OpenVinoBackend, the fp32 export with f32 math
    openvino-bf16 Translator + OpenVinoBackend, the fp32 export with bf16 math (needs AVX512_BF16/AMX)
    openvino-bf16-subpixel   the same on the sub-pixel export (U-Nets: transposed convs as convs + pixel shuffle)
    openvino-int8 Translator + OpenVinoBackend, the int8 (QDQ) export
A path that cannot run here (no openvino, no native bf16) is listed with the reason instead of a time.
Columns: median latency, ratio vs eager (higher is faster), useful GFLOP/s (the model's FLOPs on the whole input,
counted once with FlopCounterMode, over the latency: tile overlap is work we do but do not count), PSNR vs the
eager fp32 output, peak RSS (2048² tab). "default" marks what `translator_for(backend="auto")` runs.
Timed runs are interleaved across paths so background load hits each path alike, with a 0.2 s pause before each
(spinning worker threads of the previous path would otherwise slow the next); the load average is printed.
The process calls gan_models.runtimes.tune_malloc() first, as app, CLI and train.py do, so eager and torch rows run with
the same allocator settings as ours (the strongest baseline); --default-malloc measures glibc's defaults instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Tab:
    name: str
    model: str
    size: int  # input side in pixels
    image: str  # examples/ file, resized to size x size (held out of int8 calibration where the task allows)
    subprocess: bool = False


TABS: dict[str, Tab] = {
    "style": Tab("style", "default-style", 256, "small_landscape.png"),
    "sketch": Tab("sketch", "default-sketch", 256, "shoe_sketch.png"),
    "upscale": Tab("upscale", "default-upscale-x4", 256, "small_landscape.png"),
    "upscale-2048": Tab("upscale-2048", "default-upscale-x4", 2048, "landscape.jpg", subprocess=True),
    "hub-style": Tab("hub-style", "style-monet", 512, "small_landscape.png"),
    "hub-sketch": Tab("hub-sketch", "edges2shoes", 256, "shoe_sketch.png"),
    "hub-esrgan": Tab("hub-esrgan", "realesrgan-x4plus", 128, "small_landscape.png"),
    "hub-srgan": Tab("hub-srgan", "srgan-x4", 128, "small_landscape.png"),
}
DEFAULT_TABS = ("style", "sketch", "upscale", "upscale-2048")
HUB_TABS = ("hub-style", "hub-sketch", "hub-esrgan", "hub-srgan")
PAUSE_S = 0.2  # idle time before each timed run
ALL_PATHS = ("eager", "torch", "onnx-fp32", "onnx-int8", "onnx-fp16", "torch-bf16", "openvino-fp32", "openvino-bf16",
             "openvino-bf16-subpixel", "openvino-int8")
QUICK_PATHS = ("eager", "torch", "onnx-fp32", "onnx-int8")
# Compiling takes tens of seconds per model: measured on request (--paths), not in every run.
PATH_CHOICES = (*ALL_PATHS, "torch-bf16-compile")
# The ONNX file each file-based path runs.
ONNX_FILE_OF = {"onnx-fp32": "fp32", "onnx-int8": "int8", "onnx-fp16": "fp16", "openvino-fp32": "fp32",
                "openvino-bf16": "fp32", "openvino-bf16-subpixel": "fp32-subpixel", "openvino-int8": "int8"}
# OpenVINO's candidate name -> its inference precision (bf16-subpixel is bf16 on the sub-pixel graph)
OPENVINO_PRECISION = {"openvino-fp32": "fp32", "openvino-bf16": "bf16", "openvino-bf16-subpixel": "bf16",
                      "openvino-int8": "int8"}


def runs_here(path: str, module: Any) -> bool:
    """The sub-pixel path only for networks that have transposed convs to rewrite, as the registry offers it."""
    from gan_models.runtimes.onnx_export import has_subpixel_deconvs

    return path != "openvino-bf16-subpixel" or has_subpixel_deconvs(module)


@dataclass
class Row:
    tab: str
    path: str
    seconds: list[float] = field(default_factory=list)
    psnr: float | None = None
    peak_rss_mb: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")


# --- inputs, models, paths --------------------------------------------------------------------------------------


def tab_image(tab: Tab) -> Any:
    """The tab's input picture: an examples/ image resized to size x size (a seeded noise picture if missing)."""
    from PIL import Image

    path = EXAMPLES / tab.image
    if path.is_file():
        img = Image.open(path).convert("RGB")
    else:
        rng = np.random.default_rng(0)
        img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8), "RGB")
    return img.resize((tab.size, tab.size), Image.Resampling.BICUBIC)


def tab_input(tab: Tab, value_range: tuple[float, float]) -> np.ndarray:
    from gan_models import imaging

    rgb, _, _ = imaging.split_image(tab_image(tab))
    return imaging.to_tensor_range(rgb, value_range)


def load_model(spec_id: str, *, weights_dir: str | None = None, quiet: bool = False) -> tuple[Any, Any, Any, bool]:
    """(spec, module, source, random_init): the bundled weights (or `weights_dir/<id>.safetensors`), else
    random-init weights with a printed notice."""
    import dataclasses

    import torch

    from gan_models import SPECS
    from gan_models.errors import WeightsError, WeightsUnavailableError
    from gan_models.weights import build_generator, load_model

    spec = SPECS[spec_id]
    if weights_dir is not None:
        spec = dataclasses.replace(spec, bundled=Path(weights_dir) / f"{spec_id}.safetensors")
    try:
        loaded = load_model(spec, allow_fallback=False)  # a fallback would time another network
        return spec, loaded.module, loaded.source, False
    except (WeightsUnavailableError, WeightsError) as exc:
        if not quiet:
            print(f"NOTICE: {spec_id}: {exc}; timing random-init weights of the same architecture "
                  "(speed is the same; PSNR of reduced precisions is not representative)", file=sys.stderr)
        torch.manual_seed(0)
        return spec, build_generator(spec).eval(), None, True


def count_flops(module: Any, x: np.ndarray) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.from_numpy(x))
    return float(counter.get_total_flops())


def make_path(name: str, spec: Any, module: Any, onnx_files: dict[str, str], threads: int) -> Callable:
    """A callable (1, 3, H, W) float32 → output for one path; every path gets its own copy of the weights.

    Raises BackendUnavailableError where the path cannot run on this machine."""
    import torch

    from gan_models.pipeline import Translator
    from gan_models.runtimes import OnnxBackend, TorchBackend
    from gan_models.runtimes.openvino_backend import OpenVinoBackend
    from gan_models.runtimes.torch_bf16 import TorchBf16Backend

    if name == "eager":
        model = copy.deepcopy(module).float().eval()

        def eager(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()

        return eager
    if name == "torch":
        backend: Any = TorchBackend(copy.deepcopy(module), device="cpu")
    elif name in ("torch-bf16", "torch-bf16-compile"):
        t0 = time.perf_counter()
        backend = TorchBf16Backend(module, compile=name.endswith("-compile"))
        if backend.compiled:
            print(f"  {name}: compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    elif name.startswith("onnx-"):
        precision = name.removeprefix("onnx-")
        backend = OnnxBackend(onnx_files[precision], device="cpu", threads=threads, precision=precision)
    else:
        backend = OpenVinoBackend(onnx_files[ONNX_FILE_OF[name]], precision=OPENVINO_PRECISION[name],
                                  threads=threads)
    translator = Translator(spec, backend)
    return lambda x: translator.run_array(x, tile="auto")


# --- the 2048² worker (one process per path) --------------------------------------------------------------------


def _vm_hwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """Run one path on the big input in this (fresh) process: times, peak RSS of the user path, PSNR."""
    import torch

    from gan_models import imaging

    torch.set_num_threads(args["threads"])
    spec, module, _, _ = load_model(args["model"], weights_dir=args["weights"], quiet=True)
    tab = TABS[args["tab"]]
    rgb_in, _, meta = imaging.split_image(tab_image(tab))
    x = imaging.to_tensor_range(rgb_in, spec.value_range)
    del rgb_in
    fn = make_path(args["path"], spec, module, args["onnx_files"], args["threads"])
    seconds = []
    y = None
    for _ in range(args["repeats"]):
        y = None  # free the previous output before the next run, as a server would
        t = time.perf_counter()
        y = fn(x)
        seconds.append(time.perf_counter() - t)
    assert y is not None
    # The rest of what a user's request does: float result → 8-bit image.
    rgb = imaging.from_tensor_range(y, spec.value_range)
    img = imaging.merge_image(rgb, None, meta)
    peak = _vm_hwm_mb()
    del rgb, img
    psnr = None
    ref_path = Path(args["reference"])
    if args["path"] == "eager":
        np.save(ref_path, y)
    elif ref_path.is_file():
        from gan_models.runtimes.onnx_export import psnr_db

        ref = np.load(ref_path, mmap_mode="r")
        psnr = psnr_db(y, np.asarray(ref), spec.value_range)
    return {"seconds": seconds, "peak_rss_mb": peak, "psnr": psnr, "shape": list(y.shape)}


# --- the run ----------------------------------------------------------------------------------------------------


def openvino_version() -> str:
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.__version__.split("-")[0]


def ensure_exports(spec: Any, module: Any, source: Any, root: Path, precisions: Sequence[str]) -> dict[str, str]:
    from gan_models.runtimes.onnx_export import export_model

    files = {}
    for exported in export_model(spec, root, precisions=tuple(precisions), module=module, source=source):
        if exported.passed or exported.onnx_path.is_file():
            files[exported.precision] = str(exported.onnx_path)
        note = "" if exported.passed else f" (did not pass: {exported.failure})"
        print(f"  export {spec.id} {exported.precision}: {exported.onnx_path}{note}", file=sys.stderr)
    return files


def default_path(spec: Any, module: Any, source: Any, root: Path, threads: int) -> str:
    """The path backend "auto" runs once prepared: the tournament's choice (recorded, or judged now)."""
    from gan_models.runtimes import run_tournament

    outcome = run_tournament(spec, module, source, device="cpu", threads=threads, root=root)
    if outcome.runtime == "onnxruntime":
        return f"onnx-{outcome.precision}"
    if outcome.runtime == "torch":
        return "torch" if outcome.precision == "fp32" else f"torch-{outcome.precision}"
    return f"{outcome.runtime}-{outcome.precision}"


def run_in_process(tab: Tab, paths: Sequence[str], spec: Any, module: Any, files: dict[str, str], *, threads: int,
                   warmup: int, repeats: int) -> list[Row]:
    from gan_models.errors import BackendUnavailableError

    x = tab_input(tab, spec.value_range)
    rows = {p: Row(tab.name, p) for p in paths}
    fns = {}
    for p in paths:
        try:
            fns[p] = make_path(p, spec, module, files, threads)
        except BackendUnavailableError as exc:
            rows[p].note = f"unavailable: {exc}"[:160]
    outputs: dict[str, np.ndarray] = {}
    for p, fn in fns.items():
        for _ in range(warmup):
            outputs[p] = fn(x)
        if p not in outputs:
            outputs[p] = fn(x)
    for _ in range(repeats):
        for p, fn in fns.items():  # interleaved: background load lands on every path alike
            # onnxruntime's workers spin for a while after a run (that is what makes its next op start fast); without
            # a pause they would compete with the next path for the cores.
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            fn(x)
            rows[p].seconds.append(time.perf_counter() - t)
    from gan_models.runtimes.onnx_export import psnr_db

    for p in fns:
        if p != "eager" and "eager" in outputs:
            rows[p].psnr = psnr_db(outputs[p], outputs["eager"], spec.value_range)
    return list(rows.values())


def run_subprocesses(tab: Tab, paths: Sequence[str], files: dict[str, str], *, threads: int, repeats: int,
                     tmp: Path, weights_dir: str | None, default_malloc: bool) -> list[Row]:
    rows = []
    reference = tmp / f"{tab.name}-eager.npy"
    for p in ["eager", *[q for q in paths if q != "eager"]]:
        args = {"tab": tab.name, "model": tab.model, "path": p, "threads": threads, "repeats": repeats,
                "onnx_files": files, "reference": str(reference), "weights": weights_dir}
        flags = ["--default-malloc"] if default_malloc else []
        proc = subprocess.run([sys.executable, "-m", "bench.run", *flags, "--worker", json.dumps(args)], cwd=ROOT,
                              capture_output=True, text=True)
        row = Row(tab.name, p)
        if proc.returncode != 0:
            row.note = "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        else:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            row.seconds, row.peak_rss_mb, row.psnr = result["seconds"], result["peak_rss_mb"], result["psnr"]
        rows.append(row)
        print(f"  {tab.name} {p}: {row.median:.2f} s, peak RSS {row.peak_rss_mb or float('nan'):.0f} MB {row.note}",
              file=sys.stderr)
    reference.unlink(missing_ok=True)
    return rows


def format_table(rows: list[Row], flops: dict[str, float], defaults: dict[str, str]) -> str:
    lines = ["| tab | path | median ms | vs eager | GFLOP/s | PSNR vs fp32 | peak RSS |",
             "|---|---|---:|---:|---:|---:|---:|"]
    eager = {r.tab: r.median for r in rows if r.path == "eager"}
    for r in rows:
        label = f"**{r.path}** (default)" if defaults.get(r.tab) == r.path else r.path
        if r.note:
            lines.append(f"| {r.tab} | {label} | {r.note} | | | | |")
            continue
        ratio = eager[r.tab] / r.median if r.tab in eager else float("nan")
        gflops = flops[r.tab] / r.median / 1e9
        psnr = "ref" if r.path == "eager" else ("inf" if r.psnr == float("inf") else f"{r.psnr:.1f} dB")
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb is not None else ""
        lines.append(f"| {r.tab} | {label} | {r.median * 1000:.0f} | {ratio:.2f}x | {gflops:.0f} | {psnr} | {rss} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--tabs", nargs="+", choices=list(TABS), default=list(DEFAULT_TABS))
    parser.add_argument("--hub-archs", action="store_true", help=f"also the tabs {', '.join(HUB_TABS)}")
    parser.add_argument("--paths", nargs="+", choices=PATH_CHOICES, default=None,
                        help="default: all but torch-bf16-compile (quick: fewer)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per path (default 5; quick 3; 2048²: 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per path first (not for 2048²)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for every path")
    parser.add_argument("--quick", action="store_true", help="3 runs, no fp16/bf16 rows, 2048²: eager + default")
    parser.add_argument("--cache", type=Path, default=None,
                        help="ONNX folder (default: the backend's cache, so the files the app uses are timed)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="load <model id>.safetensors from this folder instead of weights/ (e.g. retrained files)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's allocator as it is (what a plain script gets) instead of tune_malloc()")
    parser.add_argument("--busy", action="store_true",
                        help="a competing process burns one core while this runs (bench/busy.py)")
    parser.add_argument("--picks", action="store_true",
                        help="instead of the tabs: every bundled model's tournament from an empty ONNX cache, then "
                             "every candidate timed; is the pick within 10%% of the fastest? (bench/busy.py)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from gan_models.runtimes import tune_malloc

    malloc = "glibc default" if args.default_malloc or not tune_malloc() else "tuned (tune_malloc)"
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from bench.busy import competing, run_picks

    if args.picks:
        return run_picks(args)
    with competing(args.busy) as competition:
        return run_tabs(args, malloc, competition)


def run_tabs(args: argparse.Namespace, malloc: str, competition: str) -> int:
    import onnxruntime
    import torch

    from gan_models.runtimes.cpu import cpu_signature
    from gan_models.runtimes.onnx_export import cache_dir

    torch.set_num_threads(args.threads)
    paths = tuple(args.paths or (QUICK_PATHS if args.quick else ALL_PATHS))
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"CPU: {cpu_signature()}")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino_version()}, "
          f"threads {args.threads}, "
          f"{args.warmup} warm-up + {repeats} timed runs, malloc {malloc}; "
          f"{competition or 'no competing process'}; load average at start {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    flops: dict[str, float] = {}
    defaults: dict[str, str] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gan_bench_") as tmp_name:
        tmp = Path(tmp_name)
        loaded: dict[str, tuple] = {}
        for name in dict.fromkeys([*args.tabs, *(HUB_TABS if args.hub_archs else ())]):
            tab = TABS[name]
            if tab.model not in loaded:
                spec, module, source, random_init = load_model(
                    tab.model, weights_dir=str(args.weights) if args.weights else None)
                # Random-init exports go to a temporary folder unless --cache names one (the weights are seeded,
                # so a named cache is reused across runs); they never land in the app's cache.
                root = args.cache or (tmp / "onnx" if random_init else cache_dir())
                if random_init:
                    notes.append(f"{tab.model}: random-init weights (weights file missing)")
                # The default path needs int8; other files only when a path runs them.
                wanted = dict.fromkeys(["fp32", "int8", *(ONNX_FILE_OF[p] for p in paths
                                                             if p in ONNX_FILE_OF and runs_here(p, module))])
                files = ensure_exports(spec, module, source, root, list(wanted))
                loaded[tab.model] = (spec, module, source, files, default_path(spec, module, source, root,
                                                                               args.threads))
            spec, module, source, files, default = loaded[tab.model]
            defaults[name] = default
            tab_paths = [p for p in paths
                         if runs_here(p, module) and (p not in ONNX_FILE_OF or ONNX_FILE_OF[p] in files)]
            side = min(tab.size, 256)  # FLOPs grow with the pixel count: counted on at most 256², scaled
            x_small = tab_input(Tab(name, tab.model, side, tab.image), spec.value_range)
            flops[name] = count_flops(module, x_small) * (tab.size / side) ** 2
            print(f"[{name}] {tab.model} {tab.size}² → {tab.size * spec.scale}², default path: {default}",
                  file=sys.stderr)
            if tab.subprocess:
                sub_paths = ["eager", default] if args.quick and args.paths is None else tab_paths
                rows += run_subprocesses(tab, list(dict.fromkeys(sub_paths)), files, threads=args.threads,
                                         repeats=args.repeats or 1, tmp=tmp,
                                         weights_dir=str(args.weights) if args.weights else None,
                                         default_malloc=args.default_malloc)
            else:
                rows += run_in_process(tab, tab_paths, spec, module, files, threads=args.threads,
                                       warmup=args.warmup, repeats=repeats)
    print()
    print(format_table(rows, flops, defaults))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; " + "; ".join(notes))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "cpu": cpu_signature(), "threads": args.threads, "repeats": repeats, "defaults": defaults,
            "gflop": {k: v / 1e9 for k, v in flops.items()},
            "rows": [{"tab": r.tab, "path": r.path, "seconds": r.seconds, "median_s": r.median, "psnr_db": r.psnr,
                      "peak_rss_mb": r.peak_rss_mb, "note": r.note} for r in rows],
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

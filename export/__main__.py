"""`python -m export`: export specs to ONNX, check them against PyTorch, write JSON sidecars.

    python -m export default-upscale-x4 -o exported/
    python -m export default-style default-sketch -o exported/ --precision fp32 int8
    python -m export --all -o exported/ --precision fp32 fp16 int8
    python -m export runs/my-model -o exported/               # a train.py run folder (its final/)
    python -m export default-style -o /tmp/x --random-init    # no weights file: random weights (development only)
    python -m export default-style -o DIR --tournament        # what backend="auto" would run here, and why

--tournament runs the job the app's background worker runs (gan_models.runtimes.tournament): every runtime and
precision on held-out images against torch fp32, timed, with each verdict printed, the choice recorded in
DIR/<id>/tournament.<device>.json (`GAN_STUDIO_ONNX_CACHE=DIR` makes the app start from it) and the peak RSS of
the process. With --precision only those precisions compete (then int8 is judged on random-init weights too).

Exit status: 0 when every export passed its parity check, 1 when any failed or was skipped (weights unavailable),
2 on a usage or library error. `GAN_STUDIO_ONNX_CACHE=DIR` makes the app and CLI use the files written to DIR.
The export code itself is the library's (gan_models/runtimes/onnx_export.py); this is only its command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gan_models.errors import GanModelsError, WeightsError, WeightsUnavailableError
from gan_models.runtimes import tune_malloc
from gan_models.runtimes.onnx_export import OPSET, PRECISIONS, Exported, check_precision, export_model
from gan_models.specs import SPECS, ModelSpec, get_spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("models", nargs="*", help="model ids (see `python -m gan_models list`) or model folders")
    parser.add_argument("--all", action="store_true", help="every model in SPECS")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder (DIR/<id>/<id>.<precision>.onnx)")
    parser.add_argument("--precision", nargs="+", default=None, metavar="P",
                        help=f"one or more of {', '.join(PRECISIONS)} (default fp32, or every one with --tournament; "
                        "bf16 is refused with the reason)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--random-init", action="store_true",
                        help="export freshly initialised weights when the weights file is missing (development)")
    parser.add_argument("--reuse", action="store_true", help="keep files that already match these weights and passed")
    parser.add_argument("--tournament", action="store_true",
                        help="judge and time every runtime and precision, record the choice, print the verdicts")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="for --tournament (default cpu)")
    return parser


def _report(result: Exported) -> str:
    side = result.sidecar
    parity = side.get("parity", {})
    if not result.passed:
        return f"FAIL {side['spec']['id']:<22} {result.precision:<5} {result.failure}"
    psnr = parity.get("psnr_vs_fp32_db")
    psnr_text = f"{psnr:.1f} dB" if isinstance(psnr, float) else str(psnr)
    size_mb = side.get("onnx_bytes", 0) / 2**20
    return (f"ok   {side['spec']['id']:<22} {result.precision:<5} {size_mb:7.1f} MB  max|diff| "
            f"{parity['max_abs_diff']:.2e}  PSNR vs fp32 {psnr_text:>8}  {result.onnx_path}")


def _tournament(spec: ModelSpec, module: Any, source: Any, args: argparse.Namespace,
                precisions: tuple[str, ...] | None) -> int:
    """Run and print one model's tournament; 1 when nothing but torch could even run (a failed export), else 0."""
    import resource

    from gan_models.runtimes.tournament import CHOSEN, EXPORT_FAILED, run_tournament

    t0 = time.perf_counter()
    try:
        outcome = run_tournament(spec, module, source, device=args.device, root=args.out, precisions=precisions,
                                 retime=not args.reuse)
    except GanModelsError as exc:
        print(f"FAIL {spec.id:<22} {exc}", file=sys.stderr)
        return 1
    for c in outcome.record["candidates"]:
        ms = f"{c['ms']:9.1f} ms" if "ms" in c else " " * 12
        psnr = f"{c['psnr_db']} dB" if "psnr_db" in c else ""
        mark = "*" if c["verdict"] == CHOSEN else " "
        print(f"{mark} {spec.id:<22} {c['runtime'] + ' ' + c['precision']:<18} {ms}  {psnr:>10}  {c['verdict']}: "
              f"{c.get('reason', '')}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"  {spec.id:<22} {'reused' if outcome.reused else 'judged'} in {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_mb:.0f} MB, {outcome.record_path}")
    return int(any(c["verdict"] == EXPORT_FAILED for c in outcome.record["candidates"]))


def _candidate(precision: str) -> str:
    from gan_models.runtimes import RUNTIMES

    offered = sorted({p for runtime in RUNTIMES.values() for p in runtime.offers})
    if precision not in offered:
        raise GanModelsError(f"unknown precision {precision!r}; the runtimes offer: {', '.join(offered)}")
    return precision


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_malloc()  # an entry point: the torch parity runs and the tournament's torch candidate run as in the app
    try:
        if args.tournament:  # the precisions of the runtimes (bf16 is OpenVINO's and torch's, not an ONNX file's)
            precisions = None if args.precision is None else tuple(dict.fromkeys(_candidate(p) for p in args.precision))
        else:
            precisions = tuple(dict.fromkeys(check_precision(p) for p in args.precision or ["fp32"]))
        if args.all and args.models:
            raise GanModelsError("give model ids or --all, not both")
        if not args.all and not args.models:
            raise GanModelsError("no model given; name model ids or use --all")
        specs = list(SPECS.values()) if args.all else [get_spec(i) for i in args.models]
    except GanModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for spec in specs:
        module = source = None
        try:
            from gan_models.weights import load_model

            loaded = load_model(spec, allow_fallback=False)
            module, source = loaded.module, loaded.source
        except (WeightsUnavailableError, WeightsError) as exc:
            if not args.random_init:
                print(f"skip {spec.id:<22} {exc}", file=sys.stderr)
                failed += 1
                continue
            import torch

            from gan_models.weights import build_generator

            torch.manual_seed(0)
            module = build_generator(spec).eval()
            print(f"note {spec.id:<22} weights unavailable ({exc}); exporting random-init weights", file=sys.stderr)
        if args.tournament:
            failed += _tournament(spec, module, source, args, precisions)
            continue
        try:
            results = export_model(spec, args.out, precisions=precisions, module=module, source=source,
                                   opset=args.opset, force=not args.reuse, retry_failed=True)
        except GanModelsError as exc:
            print(f"FAIL {spec.id:<22} {exc}", file=sys.stderr)
            failed += 1
            continue
        for result in results:
            print(_report(result))
            failed += not result.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: list models, translate or upscale files and folders.

    python -m gan_models list [--task upscale]
    python -m gan_models run default-upscale-x4 photo.jpg more/ -o out/ [--tile 256] [--outscale 2]
    python -m gan_models run default-style clip.mp4 -o out/ [--flicker off]     (video: out/clip_default-style.mp4)
    python -m gan_models run default-upscale-x4 s3://bucket/in -o s3://bucket/out --engine ray [--address auto]
    python -m gan_models eval default-upscale-x4 --data ../shared/data/sr/val [--out eval/]
    python -m gan_models space OWNER/NAME [--hardware zero-a10g] [--private] [--dry-run]   (see gan_models.deploy)

Bad files are reported and skipped; the batch goes on and the exit code is 1 when any file failed.
Library errors become one line on stderr (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from .batch import iter_images
from .deploy import add_space_arguments
from .errors import GanModelsError, InvalidTileError
from .imaging import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .runtimes import tune_malloc
from .settings import Settings
from .specs import SPECS, TASKS
from .tiling import parse_tile

if TYPE_CHECKING:
    from .pipeline import Translator


def _parse_tile(text: str) -> int | str | None:
    try:
        return parse_tile(text)
    except InvalidTileError as exc:  # argparse shows an ArgumentTypeError's message as it is
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The command line; `settings` (main passes Settings.from_env()) gives the defaults of --backend, --device
    and the CPU tiling budget (args.tile_budget_mb)."""
    settings = settings or Settings()
    parser = argparse.ArgumentParser(prog="python -m gan_models", description=__doc__.split("\n\n")[0])
    parser.set_defaults(tile_budget_mb=settings.tile_budget_mb, max_video_seconds=settings.max_video_seconds)
    sub = parser.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list the models on offer")
    ls.add_argument("--task", choices=TASKS, help="only this task")

    run = sub.add_parser("run", help="translate or upscale image and video files and folders")
    run.add_argument("model", help="model id (see `list`), a train.py output folder, or a custom model: "
                     "owner/name[/file.pth][#network] on the Hub or a local weights file (docs/custom-models.md)")
    run.add_argument("inputs", nargs="+", help="image or video files (MP4, WebM, MOV, MKV, animated GIF) or folders "
                     "(searched recursively); with --engine ray images only, also URIs pyarrow opens (s3://, gs://)")
    run.add_argument("-o", "--out", required=True, help="output folder (created if missing); a URI with --engine ray")
    run.add_argument("--tile", type=_parse_tile, default="auto", help="tile size in input pixels, 0 = none, auto")
    run.add_argument("--outscale", type=float, default=None, help="final scale (default: the model's scale)")
    run.add_argument("--backend", default=settings.backend, help="auto | torch | onnx (default: GAN_STUDIO_BACKEND)")
    run.add_argument("--device", default=settings.device, help="auto | cpu | cuda (default: GAN_STUDIO_DEVICE)")
    run.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    run.add_argument("--no-fallback", action="store_true", help="fail instead of using a bundled fallback model")
    run.add_argument("--suffix", default=None, help="added to output names (default: _MODEL)")
    run.add_argument("--flicker", choices=("auto", "on", "off"), default="auto",
                     help="video: flicker reduction (auto: on for style models, off for upscalers)")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: a loop in this process; ray: Ray Data actors "
                     "(pip install -r requirements-cluster.txt; docs/scale.md)")
    run.add_argument("--address", default=None, help="ray: cluster to join ('auto': the running one; default: start "
                     "a local Ray)")
    run.add_argument("--workers", type=int, default=None, help="ray: translator actors (default: one per GPU, else 2)")
    ev = sub.add_parser("eval", help="measure quality on a folder of images (see gan_models.evaluate)")
    ev.add_argument("model", help="model id or a train.py output folder")
    ev.add_argument("--data", type=Path, required=True, help="folder of images (HR photos for upscalers)")
    ev.add_argument("--out", type=Path, default=None, help="write sample grids / crops here")
    ev.add_argument("--reverse", default=None, help="style only: the reverse model, for cycle-consistency L1")
    ev.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ev.add_argument("--backend", default=settings.backend, help="auto | torch | onnx (default: GAN_STUDIO_BACKEND)")
    ev.add_argument("--device", default=settings.device, help="auto | cpu | cuda (default: GAN_STUDIO_DEVICE)")
    add_space_arguments(sub.add_parser("space", help="publish this checkout as a Hugging Face Space"))
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    width = max(len(k) for k in SPECS)
    for spec in SPECS.values():
        if args.task and spec.task != args.task:
            continue
        where = "bundled" if spec.is_bundled else f"hub:{spec.repo_id}"
        print(f"{spec.id:<{width}}  {spec.task:<12}  x{spec.scale}  {where:<40}  {spec.title}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        from .engines.ray import run_on_ray

        return run_on_ray(args)
    from .cache import ModelCache
    from .runtimes import requested_backend
    from .specs import get_spec

    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GanModelsError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from exc
    if not _writable(out_dir):
        raise GanModelsError(f"output folder {out_dir} is not writable")
    files = list(iter_images([Path(p) for p in args.inputs], IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    if not files:
        raise GanModelsError("no input images found in " + ", ".join(map(str, args.inputs)))

    requested_backend(args.backend)  # before resolving the model: a typo should not cost a download
    spec = get_spec(args.model)
    settings = Settings(backend=args.backend, device=args.device, tile_budget_mb=args.tile_budget_mb, max_models=1)
    # A batch run is no request: the runtime is chosen before the first file (once per weights; recorded).
    cache = ModelCache(SPECS, settings=settings, allow_fallback=not args.no_fallback, background=False,
                       threads=args.threads)
    with cache.use(spec) as translator:
        return _run_files(translator, files, out_dir, args)


def _run_files(translator: Translator, files: list[Path], out_dir: Path, args: argparse.Namespace) -> int:
    from .batch import OVERWRITE_REASON, output_name, output_suffix, report, translate_file
    from .imaging import image_notes, save_png
    from .video import is_video_file

    if translator.fallback_reason is not None:
        print(f"note: {translator.fallback_reason}", file=sys.stderr)
    suffix = output_suffix(args.suffix, translator.spec.id)
    failures: list[tuple[Path, str]] = [(p, "no such file") for p in files if not p.exists()]
    notes: list[tuple[Path, str]] = []
    written = 0
    bar = tqdm([p for p in files if p.exists()], desc=translator.spec.id, unit="img", file=sys.stderr)
    for path in bar:
        bar.set_postfix_str(path.name[-30:])
        video = is_video_file(path)
        target = out_dir / (f"{path.stem}{suffix}.mp4" if video else output_name(path.stem, suffix))
        if target.resolve() == path.resolve():
            failures.append((path, OVERWRITE_REASON))
            continue

        def work(path: Path = path, target: Path = target, video: bool = video) -> tuple[str, ...]:
            if video:
                return (_run_video(translator, path, target, args),)
            result = translator(path, tile=args.tile, outscale=args.outscale)
            save_png(result, target)
            return image_notes(result)

        result = translate_file(work)
        if result.fatal is not None:
            raise GanModelsError(f"cannot write {target}: {result.fatal}; stopped after {written} files")
        written += result.written
        notes.extend((path, note) for note in result.notes)
        if result.reason is not None:
            failures.append((path, result.reason))
    return report(notes, failures, written, out_dir)


def _run_video(translator: Translator, path: Path, target: Path, args: argparse.Namespace) -> str:
    """Translate one clip with a frame progress bar (frames/s, ETA); returns the result's summary line."""
    from .video import translate_video

    flicker = {"auto": None, "on": True, "off": False}[args.flicker]
    with tqdm(desc=path.name[-30:], unit="frame", file=sys.stderr, leave=False) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = max(total or 0, done) or None
            bar.update(done - bar.n)

        result = translate_video(translator, path, target, outscale=args.outscale, reduce_flicker=flicker,
                                 tile=args.tile, progress=progress, max_seconds=args.max_video_seconds,
                                 max_side=None)
    return result.summary()


def _writable(folder: Path) -> bool:
    probe = folder / ".gan_models_write_test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .pipeline import translator_for

    options = {"backend": args.backend, "device": args.device, "allow_fallback": False,
               "tile_budget_mb": args.tile_budget_mb, "background": False}
    translator = translator_for(args.model, **options)
    reverse = translator_for(args.reverse, **options) if args.reverse is not None else None
    report = evaluate(translator, args.data, reverse=reverse, out_dir=args.out, limit=args.limit)
    print(f"{report.model_id} ({report.task}) on {len(report.rows)} images from {args.data}:")
    print(report.to_markdown())
    if args.out is not None:
        print(f"samples written to {args.out}")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from .deploy import cmd_space as publish

    return publish(args)


COMMANDS = {"list": cmd_list, "run": cmd_run, "eval": cmd_eval, "space": cmd_space}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except GanModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    tune_malloc()
    try:
        return COMMANDS[args.command](args)
    except GanModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

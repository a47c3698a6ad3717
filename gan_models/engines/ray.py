"""`python -m gan_models run MODEL SRC... -o DST --engine ray [--address ADDR] [--workers N]`: the batch on Ray Data.

Ray Data reads the inputs as binary files (our decoder judges them, so bad files give the local engine's
`skipped PATH: reason` lines); `map_batches` runs a callable class, one Translator per actor built once from the model
id or folder (one GPU per actor where the cluster has GPUs, else the runtime tournament's choice on CPUs); each actor
writes its PNGs with the local engine's encoder, so names and bytes are the same. Inputs and outputs are local
folders or any URI pyarrow opens (s3://, gs://, hdfs://...). Without --address a local Ray starts and stops with the
run; `--address auto` joins a running cluster. Needs `pip install -r requirements-cluster.txt` (docs/scale.md).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from ..batch import OVERWRITE_REASON, iter_images, output_name, output_suffix, report, translate_file
from ..errors import GanModelsError
from ..imaging import IMAGE_SUFFIXES, image_notes, save_png, write_png

LOCAL_WORKERS = 2  # translator actors of a local Ray without --workers (each gets its share of the CPU cores)
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a local Ray's shared memory: inputs pass through it one file per batch


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the extra's data part
    except ImportError:
        raise GanModelsError("--engine ray needs Ray Data: pip install -r requirements-cluster.txt "
                             "(or pip install -e '.[cluster]')") from None
    return ray


def _filesystem(where: str) -> tuple[Any, str, bool]:
    """(pyarrow filesystem, path inside it, is local) for a local path or a URI."""
    from pyarrow import fs

    if "://" not in where:
        return fs.LocalFileSystem(), str(Path(where).resolve()), True
    try:
        filesystem, path = fs.FileSystem.from_uri(where)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad or unsupported URI
        raise GanModelsError(f"cannot open {where}: {exc}") from exc
    return filesystem, path.rstrip("/"), isinstance(filesystem, fs.LocalFileSystem)


def list_inputs(inputs: list[str]) -> tuple[Any, list[tuple[str, str]], list[str]]:
    """(filesystem, [(path in it, name shown in messages)] in the local engine's order, missing names).

    Local inputs are listed exactly as the local engine lists them; URIs with pyarrow (folders recursively, image
    suffixes, sorted). All inputs must be on one filesystem.
    """
    from pyarrow import fs

    if all("://" not in item for item in inputs):
        found = list(iter_images([Path(p) for p in inputs]))
        present = [(str(p.resolve()), str(p)) for p in found if p.exists()]
        return fs.LocalFileSystem(), present, [str(p) for p in found if not p.exists()]
    schemes = {item.split("://", 1)[0] if "://" in item else "" for item in inputs}
    if len(schemes) > 1:
        raise GanModelsError("--engine ray reads inputs from one filesystem at a time, not " + ", ".join(inputs))
    filesystem, present, missing, seen = None, [], [], set()
    for item in inputs:
        filesystem, root, _ = _filesystem(item)
        scheme = item.split("://", 1)[0]
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.Directory:
            files = [i.path for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                     if i.type == fs.FileType.File and PurePosixPath(i.path).suffix.lower() in IMAGE_SUFFIXES]
            files.sort(key=lambda p: PurePosixPath(p).parts)
        elif info.type == fs.FileType.File:
            files = [root]
        else:
            missing.append(item)
            continue
        for path in files:
            if path not in seen:
                seen.add(path)
                present.append((path, f"{scheme}://{path}"))
    return filesystem, present, missing


class TranslateFiles:
    """The callable class of `map_batches`: one Translator per actor, built once; writes each result itself and
    returns one small row per file (no image data goes back to the driver)."""

    def __init__(self, model: str, options: dict[str, Any], out: str, suffix: str | None, tile: Any,
                 outscale: float | None) -> None:
        from ..pipeline import translator_for

        self.translator = translator_for(model, **options)
        self.suffix = output_suffix(suffix, self.translator.spec.id)
        self.out_fs, self.out_root, self.out_local = _filesystem(out)
        self.tile, self.outscale = tile, outscale

    def _one(self, source: io.BytesIO, target: str) -> tuple[str, ...]:
        img = self.translator(source, tile=self.tile, outscale=self.outscale)
        if self.out_local:
            save_png(img, target)
        else:
            with self.out_fs.open_output_stream(target) as stream:
                write_png(img, stream)
        return image_notes(img)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows: dict[str, list] = {k: [] for k in ("path", "target", "written", "reason", "notes", "fatal", "model",
                                                 "fallback")}
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            target = f"{self.out_root}/{output_name(PurePosixPath(path).stem, self.suffix)}"
            if (Path(target).resolve() == Path(path).resolve()) if self.out_local else target == path:
                written, reason, notes, fatal = False, OVERWRITE_REASON, (), None
            else:
                source = io.BytesIO(bytes(data))
                source.name = path  # messages name the file as the local engine's do
                result = translate_file(lambda source=source, target=target: self._one(source, target))
                written, reason, notes, fatal = result.written, result.reason, result.notes, result.fatal
            for key, value in (("path", path), ("target", target), ("written", written), ("reason", reason or ""),
                               ("notes", "\n".join(notes)), ("fatal", fatal or ""),
                               ("model", self.translator.spec.id),
                               ("fallback", self.translator.fallback_reason or "")):
                rows[key].append(value)
        return rows


def _connect(ray: Any, address: str | None, workers: int) -> bool:
    """Join `address`, or start a bounded local Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            ray.init(num_cpus=workers + 1,  # one core's worth for the reading tasks besides the actors
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise GanModelsError(f"cannot start or join {where}: {exc}") from exc
    return True


def _quiet_ray_data(ray: Any) -> None:
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own bar reports files
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_on_ray(args: argparse.Namespace) -> int:
    """`run --engine ray`: the same output files, skip lines and exit codes as the local engine."""
    ray = _ray()
    if args.workers is not None and args.workers < 1:
        raise GanModelsError("--workers must be at least 1")
    filesystem, present, missing = list_inputs(list(args.inputs))
    if not present and not missing:
        raise GanModelsError("no input images found in " + ", ".join(args.inputs))
    out_fs, out_root, out_local = _filesystem(str(args.out))
    try:
        out_fs.create_dir(out_root, recursive=True)
    except OSError as exc:
        raise GanModelsError(f"cannot create output folder {args.out}: {exc.strerror or exc}") from exc
    if out_local and not os.access(out_root, os.W_OK):
        raise GanModelsError(f"output folder {args.out} is not writable")
    started = _connect(ray, args.address, args.workers or LOCAL_WORKERS)
    try:
        _quiet_ray_data(ray)
        rows = dict(_translate(ray, args, filesystem, [p for p, _ in present]))
    finally:
        if started:
            ray.shutdown()
    failures = [(name, "no such file") for name in missing]
    notes, written = [], 0
    for path, name in present:
        row = rows[path]
        written += bool(row["written"])
        notes.extend((name, note) for note in row["notes"].split("\n") if note)
        if row["reason"]:
            failures.append((name, row["reason"]))
    fallback = next((r["fallback"] for r in rows.values() if r["fallback"]), None)
    if fallback:
        print(f"note: {fallback}", file=sys.stderr)
    return report(notes, failures, written, args.out)


def _translate(ray: Any, args: argparse.Namespace, filesystem: Any, paths: list[str]) -> Iterator[tuple[str, dict]]:
    """(path, row) per input as the actors finish them; stops at the first fatal write error."""
    if not paths:
        return
    gpus = int(ray.cluster_resources().get("GPU", 0)) if args.device != "cpu" else 0
    workers = args.workers or (gpus or LOCAL_WORKERS)
    if args.address is None and args.threads is None and not gpus:
        threads = max(1, (os.cpu_count() or 1) // workers)  # the local cores, shared out
    else:
        threads = args.threads
    options = {"backend": args.backend, "device": "cuda" if gpus else args.device, "threads": threads,
               "allow_fallback": not args.no_fallback, "tile_budget_mb": args.tile_budget_mb,
               "background": False}  # a batch run is no request: each actor chooses the runtime first (cmd_run too)
    ds = ray.data.read_binary_files(paths, filesystem=filesystem, include_paths=True)
    ds = ds.map_batches(
        TranslateFiles, batch_size=1, batch_format="numpy",
        fn_constructor_kwargs={"model": args.model, "options": options, "out": str(args.out), "suffix": args.suffix,
                               "tile": args.tile, "outscale": args.outscale},
        compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=1 if gpus else 0, num_cpus=1)
    written = 0
    bar = tqdm(total=len(paths), desc=str(args.model), unit="img", file=sys.stderr)
    try:
        for row in ds.iter_rows():
            if row["fatal"]:
                raise GanModelsError(f"cannot write {row['target']}: {row['fatal']}; stopped after {written} files")
            written += bool(row["written"])
            bar.update(1)
            yield row["path"], row
    finally:
        bar.close()

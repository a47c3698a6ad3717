"""Copy the runs of weights/train_defaults.sh into weights/ and write weights/MANIFEST.json.

    python -m weights.make_manifest [WORK_DIR] [--device "CPU ..."]      (WORK_DIR default: runs/defaults)

Run it from the repository root: it reads train.py's defaults (`import train`), which is a script, not part of the
installed package.

For each bundled default: RUN/final*/model.safetensors → weights/<id>.safetensors, and a manifest entry with the
spec id, sha256, size, the exact training command (rebuilt from the run's train_config.json: every option that
differs from train.py's defaults), the data and its licence, the steps reached, the training wall time (from the
run's log.csv), how the run ended and the last validation figures.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import shutil
import sys
from pathlib import Path

from gan_models.files import sha256_file
from train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

WEIGHTS = ROOT / "weights"
# id → (run folder under WORK_DIR, folder of the run holding the generator)
DEFAULTS = {
    "default-upscale-x4": ("upscale", "final"),
    "default-sketch": ("sketch", "final"),
    "default-style": ("style", "final"),
    "default-style-reverse": ("style", "final_reverse"),
}
PHOTOS = ("photos of ../shared/data/sr/train (Sun & Hays 80 scene photos, Sun & Hays, ICCP 2012; first 30 of Urban100, "
          "Huang et al., CVPR 2015) minus the 10 held-out images listed here; as collected in the public repository "
          "majedelhelou/denoising_datasets (research benchmark sets, no ownership claimed there)")
PAINTINGS = ("../shared/data/paintings: four public-domain paintings (Van Gogh 'The Starry Night', Munch 'The Scream', "
             "Turner 'The Shipwreck', Matisse 'Woman with a Hat'), from the example inputs of jcjohnson/neural-style")
DATA = {
    "srgan": {"train": PHOTOS, "validation": "4 of the training photos held back by train.py (--val-count 4); "
              "the README's numbers: Set5 (Bevilacqua et al., BMVC 2012) in ../shared/data/sr/val",
              "licence": "research benchmark images: cite Sun & Hays, Huang et al. (Urban100), Bevilacqua et al. "
                         "(Set5); weights released with this project"},
    "pix2pix": {"train": PHOTOS + "; inputs are gan_models.imaging.edges_from_photo maps of them with hand-drawing "
                "variation (--edges-from-photos)",
                "validation": "the 10 held-out photos (weights/MANIFEST.json heldout)",
                "licence": "research benchmark images (Sun & Hays, Huang et al.); weights released with this project"},
    "cyclegan": {"train": "domain A: " + PHOTOS + "; domain B: " + PAINTINGS,
                 "validation": "the 10 held-out photos (weights/MANIFEST.json heldout)",
                 "licence": "photos: research benchmark images (Sun & Hays, Huang et al.); paintings: public domain; "
                            "weights released with this project"},
}


def command(cfg: dict, work: Path) -> str:
    """The train.py command line that reproduces this config (options at their defaults left out)."""
    defaults = dataclasses.asdict(TrainConfig(mode=cfg["mode"]))
    parts = ["python3 train.py", cfg["mode"]]
    for key, value in cfg.items():
        if key in ("mode", "max_minutes") or value is None or value == defaults.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is not False:
            text = str(value).replace(str(work), "$W")
            parts.append(f"{flag} {text}")
    if cfg.get("max_minutes"):
        parts.append(f"--max-minutes {cfg['max_minutes']:g}")
    return " ".join(parts)


def read_log(run: Path) -> tuple[dict, dict]:
    """(last row, last row with validation figures) of RUN/log.csv."""
    with open(run / "log.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    val = [r for r in rows if any(k.startswith("val_") for k in r)]
    return rows[-1], (val[-1] if val else {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", nargs="?", type=Path, default=Path("runs/defaults"))
    parser.add_argument("--device", default=f"CPU ({platform.processor() or platform.machine()}), no GPU")
    parser.add_argument("--heldout", type=Path, help="folder of held-out photos (default: WORK/heldout)")
    parser.add_argument("--ended", action="append", default=[], metavar="ID=TEXT",
                        help="how a run that stopped early ended (default: the --max-minutes budget)")
    args = parser.parse_args()
    work = args.work
    heldout = sorted(p.name for p in (args.heldout or work / "heldout").iterdir())
    ended = dict(n.split("=", 1) for n in args.ended)
    entries = {}
    for model_id, (run_name, folder) in DEFAULTS.items():
        run = work / run_name
        src = run / folder / "model.safetensors"
        if not src.is_file():
            print(f"skipped {model_id}: {src} not found", file=sys.stderr)
            continue
        dst = WEIGHTS / f"{model_id}.safetensors"
        shutil.copyfile(src, dst)
        cfg = json.loads((run / "train_config.json").read_text())
        config = json.loads((run / folder / "config.json").read_text())
        last, val = read_log(run)
        steps = int(last["step"])
        entries[model_id] = {
            "file": dst.name,
            "sha256": sha256_file(dst),
            "size_bytes": dst.stat().st_size,
            "arch": config.get("arch"),
            "arch_kwargs": config.get("arch_kwargs"),
            "dtype": "float16" if cfg.get("export_fp16") else "float32",
            "command": command(cfg, work),
            "reproduce": "bash weights/train_defaults.sh ../shared/data runs/defaults (W=runs/defaults), then "
                         "python -m weights.make_manifest",
            "data": DATA[cfg["mode"]],
            "steps": steps,
            "planned_steps": cfg["steps"],
            "ended": "all planned steps" if steps >= cfg["steps"] else
                     ended.get(model_id, f"stopped at the --max-minutes {cfg['max_minutes']:g} budget"),
            "wall_time_s": round(float(last["seconds"])),
            "device": args.device,
            "last_validation": {k: round(float(v), 4) for k, v in val.items() if k.startswith("val_")}
                               | ({"step": int(val["step"])} if val else {}),
        }
        print(f"{model_id}: {dst} ({dst.stat().st_size / 1e6:.1f} MB), {steps} steps")
    manifest = {
        "about": "Default generators this project trained itself with train.py; the app falls back to them when "
                 "the Hub cannot be reached. Written by python -m weights.make_manifest.",
        "heldout": heldout,
        "models": entries,
    }
    (WEIGHTS / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    total = sum(e["size_bytes"] for e in entries.values())
    print(f"weights/MANIFEST.json: {len(entries)} models, {total / 1e6:.1f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())

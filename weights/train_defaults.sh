#!/usr/bin/env bash
# Reproduces the three bundled default generators in weights/ with the exact commands that made them.
#
#   bash weights/train_defaults.sh [DATA_DIR] [WORK_DIR]     (defaults: ../shared/data, runs/defaults)
#
# They were trained side by side on a 2-core CPU (no GPU was available), one thread each, for at most
# 80 minutes of wall time (MAX_MINUTES); weights/MANIFEST.json records the steps reached, the time and the sha256 of each file.
# On a GPU, pass --device cuda (the default "auto" picks it) and raise --batch-size / --steps.
# Afterwards: python -m weights.make_manifest WORK_DIR copies the generators into weights/ and writes MANIFEST.json.
# The shipped upscaler was stopped early and resumed for 40 more minutes: see "ended" in MANIFEST.json.
set -euo pipefail
DATA=${1:-../shared/data}
W=${2:-runs/defaults}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

# Held back from every training set; the README's numbers for sketch and style are measured on these.
HELDOUT="sunhays_baseball_field_sun_astiuxzpytnbrwxr.jpg sunhays_canyon_sun_aokgdiugvxssbqyl.jpg
sunhays_fastfood_restaurant_sun_aubvtrshvuxssmgr.jpg sunhays_iceberg_sun_azuydmbrdhnfgknc.jpg
sunhays_oil_refinery_sun_axwkczecdqleaxqs.jpg sunhays_street_sun_bkgpqbvgorkjqzgp.jpg
sunhays_warehouse_sun_bggemsvcykyfkkyl.jpg urban_img_003.png urban_img_014.png urban_img_025.png"

mkdir -p "$W/photos" "$W/heldout" "$W/cg"
for f in "$DATA"/sr/train/*; do
  name=$(basename "$f")
  if grep -qw -- "$name" <<<"$HELDOUT"; then cp "$f" "$W/heldout/"; else cp "$f" "$W/photos/"; fi
done
ln -sfn "$(realpath "$W/photos")" "$W/cg/trainA"
ln -sfn "$(realpath "$DATA/paintings")" "$W/cg/trainB"
D=$W; R=$W; M=${MAX_MINUTES:-80}

python3 train.py srgan --data $D/photos --out $R/upscale --name default-upscale-x4 --steps 10000 \
  --pretrain-steps 10000 --crop 128 --batch-size 12 --lr 5e-4 --beta1 0.9 --workers 0 --max-minutes $M \
  --val-every 250 --sample-every 1000 --save-every 250 --log-every 25 > $R/upscale.log 2>&1 &
nice -n 5 python3 train.py pix2pix --edges-from-photos --data $D/photos --out $R/sketch --name default-sketch \
  --steps 3500 --crop 256 --batch-size 1 --workers 0 --max-minutes $M --export-fp16 \
  --val-every 250 --sample-every 500 --save-every 250 --log-every 25 > $R/sketch.log 2>&1 &
nice -n 5 python3 train.py cyclegan --data $W/cg --out $R/style --name default-style --steps 1800 \
  --crop 128 --batch-size 1 --workers 0 --max-minutes $M \
  --val-every 200 --sample-every 400 --save-every 200 --log-every 25 > $R/style.log 2>&1 &
wait
echo "done: $R/{upscale,sketch,style}/final (style also final_reverse)"

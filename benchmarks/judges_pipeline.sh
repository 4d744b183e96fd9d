#!/usr/bin/env bash
# The quality network and the learned judge on bdn's default DIP, end to end (issue 17), resumable step by step:
#   bash benchmarks/judges_pipeline.sh [STEP...]      steps: runs label train keep fit table (default: all)
#   bash benchmarks/judges_pipeline.sh runs & bash benchmarks/judges_pipeline.sh runs &   (two workers, one queue)
#   bash benchmarks/judges_pipeline.sh status         how far each run is (images done of the set; the one in progress)
#
# 1. runs: bdn's default DIP (skip64, bf16 where the CPU has it) with every snapshot kept (one every 20 iterations),
#    the sets SETS names, in its order (default: all): `crops1`, PolyU-train 256x256 centre crops, round 1 (one image
#    of each PolyU-train scene, camera and subject as bdn.names.polyu_group says), 3,000 iterations; `cc`, the 15
#    full-size CC images to 6,000 iterations (bdn's default cap at 512x512; the table at 3,000, the seed's setting,
#    reads the same fits up to there); `heldout`, the PolyU held-out crops (CC and held-out: measurement only, never
#    trained or tuned on); `full`, 6 full-size PolyU-train images (round 1's every third scene) to 6,000; `crops`,
#    the other crop rounds. Each `bdn run` resumes where it stopped (done.json, checkpoints) and passes by the images
#    another process is fitting (fitting.lock), so on two cores run `runs` twice side by side, one thread each: two
#    workers on one queue.
# 2. label: 10-bin labels of the PolyU-train snapshots on this machine (bdn label; LABELS below).
# 3. train: BIQAN on them, from the shipped BIQAN (two stages; a random 224x224 crop of each iterate an epoch; on
#    round 1's crops no better than the shipped one: benchmarks/records/biqan_retrain_skip64_cpu.md).
# 4. keep: every finished fit here scored by BIQAN (bdn select, read-only) and turned into per-snapshot figures
#    (benchmarks/snapshot_features.py), merged into the committed table KEPT. A machine is not kept from one
#    session to the next: the snapshots go with it, the table (committed after each `keep`) stays.
# 5. fit: the learned judge on KEPT's PolyU-train rows, crops and full size (benchmarks/learned_judge.py).
# 6. table: every judge tuned on PolyU-train and measured on CC and PolyU held-out from KEPT, the seed's figures
#    beside (benchmarks/judge_tuning.py; the learned judge by benchmarks/learned_judge.py), at 3,000 iterations and
#    at the fits' own end.
# On this 2-core CPU with one thread a job: about 7 minutes a crop and an hour per 3,000 iterations of a full-size
# image (so a 6,000-iteration fit fits in one session, not two); train about 6 minutes on 2 threads, keep a few
# seconds a fit.
# THREADS (default 1), DATA (default ../shared/data), SETS, LABELS (label's options, below), BACKBONE (train: start
# BIQAN's features from these weights; default checkpoints/biqan.safetensors, '' for none), BIQAN and KEPT may be
# set in the environment; OUT (default results/biqan_data) and BIN (default .venv/bin) too.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-1}"
OUT="${OUT:-results/biqan_data}"
BIN="${BIN:-.venv/bin}"
# Labels from each image's own PSNR range through exp(PSNR): a snapshot's label says how near it is to that image's
# best one, which is what choosing among one image's iterates needs. The seed's fixed 8-45 dB bounds give snapshots
# 0.1 dB apart labels 0.01 apart. Measured on the skip64 crops of 9 PolyU-train images whose scenes were left out of
# training (the rest trained on, 12 epochs from the shipped BIQAN): BIQAN alone 0.58 dB mean gap with these labels,
# 0.80 with the seed's (0.76 shipped). LABELS='' gives the seed's.
LABELS="${LABELS---no-is-use-fix-minmax --is-use-exp true}"
# Started from the shipped BIQAN: 0.041 best validation EMD against 0.053 from scratch on the first 15 crops.
BACKBONE="${BACKBONE-checkpoints/biqan.safetensors}"
# The committed per-snapshot table (`keep`) and the BIQAN that scores all of it: the shipped one (retrained on round
# 1's crops it chose no better: benchmarks/records/biqan_retrain_skip64_cpu.md).
KEPT="${KEPT:-benchmarks/records/skip64_snapshots.csv.gz}"
BIQAN="${BIQAN:-checkpoints/biqan.safetensors}"
# SETS: which fits `runs` makes, in order (default all): crops1 cc heldout full crops.
SETS="${SETS:-crops1 cc heldout full crops}"
export OMP_NUM_THREADS="$THREADS"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(runs label train keep fit table)
mkdir -p "$OUT/logs"

tune_sets() {  # the PolyU-train sets that $KEPT holds: what the learned judge is fitted on
  "$BIN/python" -c "import sys, pandas as pd; held = set(pd.read_csv(sys.argv[1])['dataset'])
print(' '.join(name for name in ('PolyU-train', 'PolyU-train-full') if name in held))" "$KEPT"
}

split_folders() {  # PolyU's committed split as folders of links (bdn run takes folders)
  "$BIN/python" - "$DATA" "$OUT" <<'EOF'
import sys
from pathlib import Path
from bdn.data import polyu_pairs
from bdn.names import polyu_group
data, out = sys.argv[1], Path(sys.argv[2])
seen = {}
for split, name in (("train", "polyu_train"), ("heldout", "polyu_heldout")):
    for pair in sorted(polyu_pairs(split, data), key=lambda pair: pair.name):
        folders = [name]
        if split == "train":  # round r holds the r-th image of each scene; full size: round 1's every third scene
            group = polyu_group(pair.name)
            seen[group] = seen.get(group, 0) + 1
            folders.append(f"{name}_rounds/{seen[group]}")
            if seen[group] == 1 and len(seen) % 3 == 1:
                folders.append(f"{name}_full")
        for folder in folders:
            for src, kind in ((pair.noisy, "real"), (pair.clean, "mean")):
                link = out / folder / kind / Path(src).name
                link.parent.mkdir(parents=True, exist_ok=True)
                try:  # the two runs jobs may make the same links at once
                    link.symlink_to(Path(src).resolve())
                except FileExistsError:
                    pass
EOF
}

dip() {  # dip NAME REAL MEAN [more bdn run options]
  local name=$1 real=$2 mean=$3
  shift 3
  "$BIN/bdn" run --dataset-real-path "$real" --dataset-mean-path "$mean" --output-path "$OUT/$name" \
    --net-type skip64 --num-iter 3000 --save-iter 20 --threads "$THREADS" --no-progress "$@" \
    >>"$OUT/logs/$name.log" 2>&1
}

# Braced and ended with exit: bash reads all of it before the first step, so editing this file while
# a long `runs` goes on cannot change what that run does.
{
for step in "${STEPS[@]}"; do
  case "$step" in
    runs)
      split_folders
      rounds="$OUT/polyu_train_rounds"
      for set in $SETS; do
        case "$set" in
          crops1) dip skip64_c256 "$rounds/1/real" "$rounds/1/mean" --crop 256 ;;
          # Full size to 6,000 iterations, bdn's default cap at 512x512 (dip_peaks_skip64_cpu.md): the table at
          # 3,000 (the seed's setting) reads the same fits up to there (--until).
          cc) dip skip64_cc "$DATA/CC/real" "$DATA/CC/mean" --keep-state --num-iter 6000 ;;
          heldout) dip skip64_heldout_c256 "$OUT/polyu_heldout/real" "$OUT/polyu_heldout/mean" --crop 256 ;;
          full) dip skip64_train_full "$OUT/polyu_train_full/real" "$OUT/polyu_train_full/mean" --keep-state \
            --num-iter 6000 ;;
          crops)
            for round in $(ls "$rounds" | sort -n | tail -n +2); do
              dip skip64_c256 "$rounds/$round/real" "$rounds/$round/mean" --crop 256
            done
            ;;
          *)
            echo "judges_pipeline.sh: error: unknown set '$set' in SETS (crops1 cc heldout full crops)" >&2
            exit 1
            ;;
        esac
      done
      ;;
    label)
      # shellcheck disable=SC2086  # LABELS is a list of options
      trained=()
      for run in skip64_c256 skip64_train_full; do
        [ -d "$OUT/$run" ] && trained+=("$OUT/$run")
      done
      "$BIN/bdn" label --run-path "${trained[@]}" \
        --output-path "$OUT/skip64_c256_scores.txt" $LABELS
      ;;
    train)
      "$BIN/bdn" train-biqan --score-path "$OUT/skip64_c256_scores.txt" --output-path "$OUT/biqan_skip64" \
        --tiles 1 --epochs 20 --threads "$THREADS" --workers 0 --no-progress ${BACKBONE:+--backbone "$BACKBONE"}
      ;;
    keep)
      # Every finished fit on this machine scored by $BIQAN and turned into per-snapshot rows, merged into the
      # committed table $KEPT: the snapshots stay on the machine that made them (a machine is not kept between
      # sessions), the table (kB an image) is what the judges are tuned and measured on.
      runs=() noisy=() scores=()
      for spec in "PolyU-train skip64_c256 $OUT/polyu_train/real" \
        "PolyU-train-full skip64_train_full $OUT/polyu_train/real" \
        "PolyU skip64_heldout_c256 $OUT/polyu_heldout/real" "CC skip64_cc $DATA/CC/real"; do
        set -- $spec
        [ -n "$(find "$OUT/$2" -mindepth 2 -maxdepth 2 -name done.json 2>/dev/null | head -n 1)" ] || continue
        "$BIN/bdn" select --run-path "$OUT/$2" --model-path "$BIQAN" --output-path "$OUT/select_$2" --tiles 3 \
          --threads "$THREADS" --no-progress
        runs+=("$1=$OUT/$2") noisy+=("$1=$3") scores+=("$1=$OUT/select_$2/scores.csv")
      done
      [ ${#runs[@]} -gt 0 ] || { echo "judges_pipeline.sh: keep: no finished fit under $OUT" >&2; exit 1; }
      "$BIN/python" benchmarks/snapshot_features.py --runs "${runs[@]}" --noisy "${noisy[@]}" \
        --scores "${scores[@]}" --scored-by "$(basename "$BIQAN") $(sha256sum "$BIQAN" | cut -c 1-12)" \
        --scored-only --merge --workers 1 --out "$KEPT"
      ;;
    fit)
      "$BIN/python" benchmarks/learned_judge.py --stats "$KEPT" --tune $(tune_sets) --out "$OUT/learned_judge" \
        --weights "$OUT/judge_learned_skip64.json"
      ;;
    table)
      # Twice: as the fits stood at 3,000 iterations (the seed's setting, its figures beside), and at their end
      # (6,000 on CC: bdn's default cap at 512x512).
      for until in 3000 ""; do
        "$BIN/python" benchmarks/judge_tuning.py --stats "$KEPT" --tune PolyU-train ${until:+--until "$until"} \
          --out "$OUT/judges_table${until:+_$until}"
        "$BIN/python" benchmarks/learned_judge.py --stats "$KEPT" --tune $(tune_sets) --cv \
          ${until:+--until "$until"} --out "$OUT/learned_table${until:+_$until}"
      done
      ;;
    status)
      count() { find -L "$@" 2>/dev/null | wc -l || true; }
      for spec in "skip64_c256 $OUT/polyu_train/real" "skip64_heldout_c256 $OUT/polyu_heldout/real" \
        "skip64_cc $DATA/CC/real" "skip64_train_full $OUT/polyu_train_full/real"; do
        set -- $spec
        total=$(count "$2" -maxdepth 1 -type f)
        finished=$(count "$OUT/$1" -mindepth 2 -maxdepth 2 -name done.json)
        line="$1: $finished of $total images done"
        for lock in "$OUT/$1"/*/fitting.lock; do  # the images a worker holds now
          [ -e "$lock" ] || continue
          line="$line; in progress: $(basename "$(dirname "$lock")"), $(count "$(dirname "$lock")" -name '*.png') snapshots"
        done
        echo "$line"
      done
      ;;
    *)
      echo "judges_pipeline.sh: error: unknown step '$step' (runs label train keep fit table status)" >&2
      exit 1
      ;;
  esac
done
exit 0
}

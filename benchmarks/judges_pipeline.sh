#!/usr/bin/env bash
# The quality network and the learned judge on bdn's default DIP, end to end (issue 17), resumable step by step:
#   bash benchmarks/judges_pipeline.sh [STEP...]      steps: runs label train score features fit table (default: all)
#   bash benchmarks/judges_pipeline.sh runs-crops & bash benchmarks/judges_pipeline.sh runs-cc &   (the runs, two jobs)
#   bash benchmarks/judges_pipeline.sh status         how far each run is (images done of the set; the one in progress)
#
# 1. runs: bdn's default DIP (skip64, bf16 where the CPU has it) with every snapshot kept (3,000 iterations, one every
#    20) on PolyU-train 256x256 centre crops (training data), PolyU held-out crops and the 15 full-size CC images
#    (measurement only: never trained or tuned on). Each `bdn run` resumes where it stopped (done.json, checkpoints).
#    `runs` = `runs-crops` then `runs-cc`; on two cores run those two as two one-thread jobs side by side. The
#    training crops go in rounds, one image of each PolyU-train scene (camera and subject, bdn.names.polyu_group) a
#    round, round 1 before the held-out crops: a partial set already spans every camera and scene.
# 2. label: the seed's 10-bin labels of the PolyU-train snapshots (bdn label).
# 3. train: BIQAN on them, N x N crops of each iterate an epoch (bdn train-biqan --tiles).
# 4. score: the new BIQAN's scores of every snapshot of the three runs (bdn select, read-only).
# 5. features: per-snapshot figures of the three runs (benchmarks/snapshot_features.py).
# 6. fit: the learned judge on PolyU-train's features (benchmarks/learned_judge.py).
# 7. table: every judge on CC and PolyU held-out, the seed's figures beside (benchmarks/biqan_judges.py).
# On this 2-core CPU with one thread a job: the runs take about 13 minutes a PolyU crop and an hour a CC image, so the
# runs step spans sessions; each later step takes minutes. THREADS (default 1) and DATA (default ../shared/data) may be
# set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-$(cd .. && pwd)/shared/data}"
THREADS="${THREADS:-1}"
OUT=results/biqan_data
BIN=.venv/bin
export OMP_NUM_THREADS="$THREADS"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(runs label train score features fit table)
mkdir -p "$OUT/logs"

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
        if split == "train":  # round r holds the r-th image of each scene
            group = polyu_group(pair.name)
            seen[group] = seen.get(group, 0) + 1
            folders.append(f"{name}_rounds/{seen[group]}")
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

for step in "${STEPS[@]}"; do
  case "$step" in
    runs | runs-crops | runs-cc)
      split_folders
      if [ "$step" != runs-cc ]; then
        for round in $(ls "$OUT/polyu_train_rounds" | sort -n); do
          dip skip64_c256 "$OUT/polyu_train_rounds/$round/real" "$OUT/polyu_train_rounds/$round/mean" --crop 256
          if [ "$round" = 1 ]; then
            dip skip64_heldout_c256 "$OUT/polyu_heldout/real" "$OUT/polyu_heldout/mean" --crop 256
          fi
        done
      fi
      if [ "$step" != runs-crops ]; then
        dip skip64_cc "$DATA/CC/real" "$DATA/CC/mean"
      fi
      ;;
    label)
      "$BIN/bdn" label --run-path "$OUT/skip64_c256" --output-path "$OUT/skip64_c256_scores.txt"
      ;;
    train)
      "$BIN/bdn" train-biqan --score-path "$OUT/skip64_c256_scores.txt" --output-path "$OUT/biqan_skip64" \
        --tiles 2 --epochs 40 --threads "$THREADS" --workers 0 --no-progress
      ;;
    score)
      for run in skip64_c256 skip64_heldout_c256 skip64_cc; do
        "$BIN/bdn" select --run-path "$OUT/$run" --model-path "$OUT/biqan_skip64/best.safetensors" \
          --output-path "$OUT/select_$run" --tiles 3 --threads "$THREADS" --no-progress
      done
      ;;
    features)
      "$BIN/python" benchmarks/snapshot_features.py \
        --runs PolyU-train="$OUT/skip64_c256" PolyU="$OUT/skip64_heldout_c256" CC="$OUT/skip64_cc" \
        --noisy PolyU-train="$OUT/polyu_train/real" PolyU="$OUT/polyu_heldout/real" CC="$DATA/CC/real" \
        --scores PolyU-train="$OUT/select_skip64_c256/scores.csv" PolyU="$OUT/select_skip64_heldout_c256/scores.csv" \
        CC="$OUT/select_skip64_cc/scores.csv" --workers 1 --out "$OUT/skip64_snapshots.csv.gz"
      ;;
    fit)
      "$BIN/python" benchmarks/learned_judge.py --stats "$OUT/skip64_snapshots.csv.gz" --tune PolyU-train \
        --out "$OUT/learned_judge" --weights "$OUT/judge_learned_skip64.json"
      ;;
    table)
      "$BIN/python" benchmarks/biqan_judges.py --runs CC="$OUT/skip64_cc" PolyU="$OUT/skip64_heldout_c256" \
        --biqan "$OUT/biqan_skip64/best.safetensors" --biqan-tiles 3 \
        --learned-weights "$OUT/judge_learned_skip64.json" \
        --noisy CC="$DATA/CC/real" PolyU="$OUT/polyu_heldout/real" \
        --clean CC="$DATA/CC/mean" PolyU="$OUT/polyu_heldout/mean" --classical nlm \
        --threads "$THREADS" --out "$OUT/judges_table"
      ;;
    status)
      count() { find -L "$@" 2>/dev/null | wc -l || true; }
      for spec in "skip64_c256 $OUT/polyu_train/real" "skip64_heldout_c256 $OUT/polyu_heldout/real" \
        "skip64_cc $DATA/CC/real"; do
        set -- $spec
        total=$(count "$2" -maxdepth 1 -type f)
        finished=$(count "$OUT/$1" -mindepth 2 -maxdepth 2 -name done.json)
        busy=$(ls -t "$OUT/$1"/*/checkpoint.pt 2>/dev/null | head -n 1 || true)  # the newest: others wait
        line="$1: $finished of $total images done"
        [ -n "$busy" ] && line="$line; in progress: $(basename "$(dirname "$busy")"), $(count "$(dirname "$busy")" \
          -name '*.png') snapshots"
        echo "$line"
      done
      ;;
    *)
      echo "judges_pipeline.sh: error: unknown step '$step' (runs runs-crops runs-cc label train score features fit table status)" >&2
      exit 1
      ;;
  esac
done

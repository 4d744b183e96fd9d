#!/usr/bin/env bash
# The DIP side of session.sh (issues 3 and 4), on one GPU, in parallel processes:
#   dip_pipeline.sh all      # 1-4 below; BIQAN trained on 1 as soon as 1 is done, then judged on 2 and 3
#   dip_pipeline.sh judges   # 2-4, judged with the shipped checkpoints/biqan.safetensors (no training), and
#                            # 1 beside them as the judges' tuning set (fewer processes)
# DEADLINE=S (seconds from the start; default none): DIP runs still going then are stopped and their unfinished
# images set aside (<run>.unfinished), so the judges always run on what finished before the lease ends.
# TRAIN_CROP=N|full (default 256): PolyU-train's runs on N x N centre crops or on the whole 512x512 images.
# DEFAULT=0 leaves out 4 (dip_default.py).
# NET=skip64 fits bdn's default generator (what `bdn denoise --method dip` runs; issue 17's training and test data)
# instead of the seed's `skip` (the default here, as the records of issues 3 and 4 were made); PolyU-train's and the
# held-out crops' runs then go to 3,000 iterations with a snapshot every 20 (skip64 peaks later on 256x256 crops),
# and BIQAN learns as benchmarks/judges_pipeline.sh has it on the CPU: from the shipped BIQAN, on labels from each
# image's own PSNR range through exp(PSNR) (benchmarks/records/biqan_labels_skip64_cpu.md).
# 1. run_BDN over 35 PolyU-train images (2,000 iterations, a snapshot every 25) -> BIQAN's training data;
# 2. run_BDN over all 15 CC images, full 512x512, 3,000 iterations, a snapshot every 20 (the judges' test set);
# 3. run_BDN over 15 PolyU held-out crops (256x256, as 1) (the held-out table);
# 4. benchmarks/dip_default.py (bdn's default DIP on issue 3's cases, run on past its stop to 3,000);
# then, ON the device (the snapshots, 1.3 GB for CC, cannot come back; their tables can): biqan_judges.py on 2 and
# 3 and on 1, test_BIQAN.py on each run with the centre crop and with 3x3 crops (scores.csv), and
# snapshot_features.py's table of all three (for benchmarks/judge_tuning.py off the machine).
set -u
MODE=${1:-all}
if [ "$MODE" != all ] && [ "$MODE" != judges ]; then
    echo "usage: dip_pipeline.sh all|judges" >&2
    exit 2
fi
W=/tmp/gpu
NET=${NET:-skip}
COMMON="--stop none --device cuda --threads 1 --no-progress --checkpoint_iter 500 --net_type $NET"
CROP_RUN="--num_iter 2000 --save_iter 25"
LABELS=""
TRAIN_FROM="--epochs 40"
if [ "$NET" = skip64 ]; then
    CROP_RUN="--num_iter 3000 --save_iter 20"
    LABELS="--no-is-use-fix-minmax --is-use-exp true"
    TRAIN_FROM="--backbone checkpoints/biqan.safetensors --epochs 20"  # two stages, warm: fewer epochs
fi
D=.devdata/dip
C=$BDN_DATA/CC
BIQAN=checkpoints/biqan.safetensors
DEADLINE=${DEADLINE:-0}
TRAIN_CROP=${TRAIN_CROP:-256}
TRAIN_CROP_OPTION="--crop $TRAIN_CROP"
[ "$TRAIN_CROP" = full ] && TRAIN_CROP_OPTION=""
PARTS=3
[ "$MODE" = judges ] && PARTS=2  # a tuning set, not training data: fewer processes, CC keeps more of the GPU
for k in $(seq $PARTS); do
    python3 run_BDN.py --dataset_real_path $D/polyu_train/real --dataset_mean_path $D/polyu_train/mean \
        --output_path $W/run_polyu_train $TRAIN_CROP_OPTION $CROP_RUN $COMMON \
        --is_split_dataset --dataset_part_id $k --dataset_parts $PARTS > $W/logs/dip_polyu_train_$k.txt 2>&1 &
done
for k in 1 2 3 4; do
    python3 run_BDN.py --dataset_real_path $C/real --dataset_mean_path $C/mean --output_path $W/run_cc \
        --num_iter 3000 --save_iter 20 $COMMON \
        --is_split_dataset --dataset_part_id $k --dataset_parts 4 > $W/logs/dip_cc_$k.txt 2>&1 &
done
python3 run_BDN.py --dataset_real_path $D/polyu_heldout/real --dataset_mean_path $D/polyu_heldout/mean \
    --output_path $W/run_polyu_heldout --crop 256 $CROP_RUN $COMMON > $W/logs/dip_polyu_heldout.txt 2>&1 &
if [ "${DEFAULT:-1}" != 0 ]; then
    python3 benchmarks/dip_default.py --device cuda --threads 1 --past-stop 3000 --checkpoint-every 0 \
        --out $W/dip_default > $W/logs/dip_default.txt 2>&1 &
fi
if [ "$MODE" = all ]; then  # BIQAN learns from PolyU-train's iterates while the other runs go on
    (
        while pgrep -f "run_polyu_[t]rain" > /dev/null; do sleep 10; done
        python3 generator_dataset.py --run_path $W/run_polyu_train --output_path $W/scores_polyu_train.txt $LABELS
        python3 train_BIQAN.py --score_path $W/scores_polyu_train.txt --output_path $W/biqan --device cuda \
            --workers 4 --batch_size 64 --no_progress $TRAIN_FROM
    ) > $W/logs/biqan_train.txt 2>&1 &
    biqan_pid=$!
fi
if [ "$DEADLINE" -gt 0 ]; then
    while [ $SECONDS -lt "$DEADLINE" ] && pgrep -f "run_BDN[.]py|dip_default[.]py" > /dev/null; do sleep 5; done
    pkill -f "run_BDN[.]py|dip_default[.]py"
    sleep 5
    for run in $W/run_cc $W/run_polyu_heldout $W/run_polyu_train; do
        for image in "$run"/*/; do
            if [ -d "$image" ] && [ ! -f "$image/done.json" ]; then
                mkdir -p "$run.unfinished" && mv "$image" "$run.unfinished/"
            fi
        done
    done
    echo "deadline: $(ls -d $W/run_*.unfinished/*/ 2>/dev/null | wc -l) unfinished images set aside"
fi
if [ "$MODE" = all ]; then
    wait $biqan_pid
    [ -f $W/biqan/best.safetensors ] && BIQAN=$W/biqan/best.safetensors
fi
wait
echo "judging with $BIQAN"
python3 benchmarks/biqan_judges.py --runs CC=$W/run_cc PolyU=$W/run_polyu_heldout --biqan $BIQAN \
    --noisy CC=$C/real PolyU=$D/polyu_heldout/real --clean CC=$C/mean PolyU=$D/polyu_heldout/mean --classical nlm \
    --device cuda --no-progress --out $W/biqan_judges > $W/logs/biqan_judges.txt 2>&1 &
python3 benchmarks/biqan_judges.py --runs PolyU-train=$W/run_polyu_train --biqan $BIQAN \
    --noisy PolyU-train=$D/polyu_train/real --clean PolyU-train=$D/polyu_train/mean \
    --device cuda --no-progress --out $W/biqan_judges_train > $W/logs/biqan_judges_train.txt 2>&1 &
for run in cc polyu_heldout polyu_train; do  # scores.csv: every snapshot's score, for tuning off the machine
    for tiles in 1 3; do
        python3 test_BIQAN.py --run_path $W/run_$run --model_path $BIQAN --tiles $tiles --no-progress \
            --output_path $W/test_biqan_${run}_tiles$tiles --device cuda > $W/logs/test_biqan_${run}_$tiles.txt 2>&1 &
    done
done
wait
python3 benchmarks/snapshot_features.py --runs CC=$W/run_cc PolyU=$W/run_polyu_heldout \
    PolyU-train=$W/run_polyu_train --noisy CC=$C/real PolyU=$D/polyu_heldout/real PolyU-train=$D/polyu_train/real \
    --scores CC=$W/test_biqan_cc_tiles1/scores.csv PolyU=$W/test_biqan_polyu_heldout_tiles1/scores.csv \
    PolyU-train=$W/test_biqan_polyu_train_tiles1/scores.csv --workers 12 \
    --out $W/snapshot_stats.csv.gz > $W/logs/snapshot_features.txt 2>&1
echo pipeline done

#!/usr/bin/env bash
# One lent GPU machine, about 25 minutes: every heavy job of issues 3, 4, 5 and 7 at once, packed for the way back.
#   bash benchmarks/gpu/session.sh start    # grey trainings + the DIP pipeline (dip_pipeline.sh), in the background
#   bash benchmarks/gpu/session.sh colour   # the colour trainings (PolyU-train pairs), in the background
#   bash benchmarks/gpu/session.sh judges   # only issues 3 and 4's DIP runs and tables, the GPU to themselves
#                                           # (dip_pipeline.sh judges: the shipped BIQAN, no training)
#   bash benchmarks/gpu/session.sh biqan    # BIQAN retrained on full-size PolyU-train iterates, judged on CC
#                                           # (dip_pipeline.sh all with TRAIN_CROP=full DEFAULT=0; set DEADLINE)
#   bash benchmarks/gpu/session.sh default  # issue 17: as biqan, on bdn's default DIP (NET=skip64: 256 crops of
#                                           # PolyU-train for BIQAN, full CC and held-out crops judged; set DEADLINE)
#   bash benchmarks/gpu/session.sh mixed    # issue 19: bf_ffdnet grey and the colour models on the mixed data
#                                           # (benchmarks/configs/cpu/*, minutes and device overridden for the GPU)
#   bash benchmarks/gpu/session.sh wait N   # wait up to N seconds for everything, then pack what is done into $OUT
# Data: .devdata/data (CC, PolyU, Train400, Set12 copied from ../shared/data) and .devdata/dip (the PolyU crops'
# folders), carried by the device tool. Work goes to /tmp/gpu. Every job is resumable, so a second start goes on.
# The machine's image lacks PyWavelets (scikit-image's estimate_sigma, so the noise judge, needs it): carry its
# wheel in .whl (pip download --only-binary=:all: --python-version 3.12 ... PyWavelets==1.8.0 -d .whl), installed
# into /tmp/site here, or dip_default.py and the noise rows of biqan_judges.py fail there.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD BDN_DATA=$PWD/.devdata/data PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MPLBACKEND=Agg
W=/tmp/gpu
mkdir -p $W/train $W/logs
if ls .whl/*.whl > /dev/null 2>&1 && [ ! -d /tmp/site ]; then  # wheels carried for what the image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
[ -d /tmp/site ] && export PYTHONPATH=$PYTHONPATH:/tmp/site

train() {  # train NAME...: one background trainer per config in benchmarks/configs/gpu
    for name in "$@"; do
        setsid nohup python3 -m bdn.train --model-directory $W/train/$name \
            --pipeline-config benchmarks/configs/gpu/$name.json --no-progress > $W/logs/train_$name.txt 2>&1 &
    done
}

pack() {
    local out=${OUT:-/tmp/out}
    mkdir -p "$out"
    (cd $W && tar czf "$out/train.tgz" --exclude=checkpoint.pt --exclude=last.safetensors train logs 2>/dev/null)
    (cd $W && tar czf "$out/dip.tgz" --exclude='*.png' --exclude='*.pt' --exclude=train --exclude=logs \
        --exclude='run_*/*/[0-9]*.png' . 2>/dev/null)
    (cd $W && tar czf "$out/figures.tgz" $(ls -d run_*/*/curve*.png biqan/*.png biqan_judges* test_biqan_*/*_Curves.png 2>/dev/null) 2>/dev/null)
    # the device tool brings back files of at most 16 MiB: cut bigger archives (cat train.tgz.part* | tar xz)
    for archive in "$out"/*.tgz; do
        if [ "$(stat -c %s "$archive")" -gt 15000000 ]; then split -b 15m "$archive" "$archive.part" && rm "$archive"; fi
    done
    ls -la "$out"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
    tail -n 3 $W/logs/*.txt
}

case "${1:-}" in
start)
    train bf_dncnn_grey resnet_5x5_bn_3x3_grey sparse_resnet_5x5_bn_3x3_grey sparse_resnet_4x5_bn_3x3_grey \
        gp3_resnet_5x5_bn_3x3_grey bf_dncnn_grey_0_10 dncnn_grey_0_10
    setsid nohup bash benchmarks/gpu/dip_pipeline.sh all > $W/logs/dip_pipeline.txt 2>&1 &
    ;;
judges)  # DEADLINE=S (seconds): the judges run on what finished by then (dip_pipeline.sh)
    setsid nohup bash benchmarks/gpu/dip_pipeline.sh judges > $W/logs/dip_pipeline.txt 2>&1 &
    ;;
biqan)
    TRAIN_CROP=full DEFAULT=0 setsid nohup bash benchmarks/gpu/dip_pipeline.sh all > $W/logs/dip_pipeline.txt 2>&1 &
    ;;
colour)  # bf_dncnn_colour.json waits for a lease of its own: DnCNN-sized runs need more than a shared GPU gives
    train resnet_5x5_bn_3x3_colour sparse_resnet_5x5_bn_3x3_colour sparse_resnet_4x5_bn_3x3_colour \
        gp3_resnet_5x5_bn_3x3_colour autoencoder_colour rednet_colour mwcnn_colour pridnet_colour \
        pixelshuffle_unet_colour unet_colour vae_colour
    ;;
default)
    NET=skip64 DEFAULT=0 setsid nohup bash benchmarks/gpu/dip_pipeline.sh all > $W/logs/dip_pipeline.txt 2>&1 &
    ;;
mixed)  # the CPU configs with the GPU's device and MINUTES (default 10) each, all at once
    for config in benchmarks/configs/cpu/bf_ffdnet_grey.json benchmarks/configs/cpu/*_colour_mixed.json; do
        name=$(basename "$config" .json)
        python3 -c "import json, sys; c = json.load(open(sys.argv[1])); c['train'].update(device='cuda', \
minutes=float(sys.argv[2]), precision='auto'); json.dump(c, open(sys.argv[3], 'w'))" "$config" "${MINUTES:-10}" \
            $W/$name.json
        setsid nohup python3 -m bdn.train --model-directory $W/train/$name --pipeline-config $W/$name.json \
            --no-progress > $W/logs/train_$name.txt 2>&1 &
    done
    ;;
wait)
    end=$((SECONDS + ${2:-60}))
    while [ $SECONDS -lt $end ] && pgrep -f "bdn.train|dip_pipeline.sh" > /dev/null; do sleep 10; done
    pack
    ;;
*)
    echo "usage: session.sh start|colour|judges|biqan|default|mixed|wait SECONDS" >&2
    exit 2
    ;;
esac

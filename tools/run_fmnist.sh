#!/usr/bin/env bash
# run_fmnist.sh - the README's main command (`make run`): trains a small
# ParaFormer progressively on Fashion-MNIST, prints the branch sweep and
# writes the plot.
#
#   tools/run_fmnist.sh [extra `paraformer train` flags]
#
# Data: $PARAFORMER_DATA/fashion-mnist when it holds the four IDX files
# (.gz or raw), else the 4000/1000-image sample shipped in data/fmnist-sample.
# Output in $RUN_DIR (default runs/fmnist): model.safetensors (with its
# training state: rerun with --resume to continue), train.jsonl, train.svg;
# a rerun replaces them (--overwrite: the model of the previous run).
# RUN_EPOCHS sets the epochs per stage (default: 4 on the full data, about
# two minutes on 2 cores; 6 on the sample, seconds). The full recipe that reaches 90 %
# is `paraformer train --preset fmnist-small` with its own epochs (README).
set -euo pipefail
cd "$(dirname "$0")/.."
exe="${PARAFORMER_EXE:-build/paraformer}"
out="${RUN_DIR:-runs/fmnist}"
mkdir -p "$out"

have_full=0
if [ -n "${PARAFORMER_DATA:-}" ]; then
    have_full=1
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [ -f "$PARAFORMER_DATA/fashion-mnist/$f" ] || [ -f "$PARAFORMER_DATA/fashion-mnist/$f.gz" ] || have_full=0
    done
fi
if [ "$have_full" = 1 ]; then
    data="fmnist"
    epochs="${RUN_EPOCHS:-4}"
    echo "data: Fashion-MNIST from \$PARAFORMER_DATA=$PARAFORMER_DATA (60000 train / 10000 test)"
else
    data="fmnist:data/fmnist-sample"
    epochs="${RUN_EPOCHS:-6}"
    echo "data: the shipped sample data/fmnist-sample (4000 train / 1000 test images);"
    echo "      set PARAFORMER_DATA to a folder holding fashion-mnist/ for the full set"
fi

# a new run starts a new log; --resume (among the extra flags) continues it
resume=0
for a in "$@"; do case $a in --resume | --resume=*) resume=1 ;; esac; done
[ "$resume" = 1 ] || rm -f "$out/train.jsonl"
set -x
"$exe" train --preset fmnist-small --data "$data" --epochs "$epochs" --patience 0 \
    --out "$out/model.safetensors" --overwrite --log "$out/train.jsonl" "$@"
"$exe" eval --model "$out/model.safetensors" --data "$data@test" --sweep
"$exe" plot --log "$out/train.jsonl" --out "$out/train.svg" --title "ParaFormer on Fashion-MNIST ($data)"
{ set +x; } 2>/dev/null
echo
echo "wrote $out/model.safetensors, $out/train.jsonl and $out/train.svg (open it in a browser)"

#!/usr/bin/env bash
# Regenerates the seed corpora of the fuzz harnesses, tests/fuzz/corpus/<harness>/,
# with the project's own writers (`make fuzz-corpus` builds what it needs
# and runs this from the repository root):
#
#   safetensors/  tiny models from `paraformer init` (two architectures), a
#                 checkpoint with training state from one tiny `paraformer
#                 train` run on data/fmnist-sample (its options are those
#                 fuzz_safetensors resumes with: --epochs 1 --batch 8, the
#                 rest default), `compress` and `expand` of them, the same
#                 model with F16/BF16/F64 tensors, and PyTorch's
#                 tests/fixtures/torch_model.safetensors
#   npy/          every dtype through pf_npy_save, hand-built v2/v3 headers,
#                 two fixtures
#   config/, dataset/, image/   see tests/fuzz/make_corpus.c
#
# Every file is deterministic (seeded runs; the program's checkpoints are
# reproducible to the byte), so a rerun rewrites the committed corpus
# unchanged unless a writer changed. Keep it small: safetensors seeds must
# stay under the 64 KiB -max_len of `make fuzz-run`.
#
#   tests/fuzz/make_corpus.sh [PARAFORMER_EXE [MAKE_CORPUS_EXE]]
set -euo pipefail

EXE=${1:-build/paraformer}
GEN=${2:-build-fuzz/make_corpus}
OUT=tests/fuzz/corpus
DATA=data/fmnist-sample

for f in "$EXE" "$GEN"; do
    [ -x "$f" ] || { echo "make_corpus.sh: $f not built (make fuzz-corpus builds it)" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT"/safetensors "$OUT"/npy "$OUT"/config "$OUT"/dataset "$OUT"/image
st=$OUT/safetensors

# tiny models: 8x8 gray input, 2 branches of 1 layer, width 8
TINY=(--image-size 8 --channels 1 --patch 4 --dim 8 --heads 2 --mlp-dim 16 --classes 3 --branches 2 --depth 1)
"$EXE" init --out "$st/init_prenorm_delta_cls.safetensors" "${TINY[@]}" --seed 1 >/dev/null
"$EXE" init --out "$st/init_normed_sum_mean.safetensors" "${TINY[@]}" --seed 2 --residual normed \
    --aggregate sum --qkv-bias off --pool mean --dropout 0.1 --emb-dropout 0.05 --mean 0.5 --std 0.25 >/dev/null
"$EXE" init --out "$st/init_rgb_3branches.safetensors" --image-size 4 --channels 3 --patch 2 --dim 4 --heads 1 \
    --mlp-dim 4 --classes 2 --branches 3 --depth 2 --seed 3 --mean 0.4,0.5,0.6 --std 0.2,0.3,0.4 >/dev/null

# a checkpoint with training state (train.* tensors, train_state metadata):
# 28x28 Fashion-MNIST, patch 7, width 8; one epoch per stage
"$EXE" train --data "fmnist:$DATA#limit=100" --out "$st/train_state.safetensors" --image-size 28 --channels 1 \
    --patch 7 --dim 8 --heads 2 --mlp-dim 16 --branches 2 --depth 1 --epochs 1 --batch 8 --test none --quiet \
    --threads 1 >/dev/null
"$EXE" compress --model "$st/train_state.safetensors" --keep 1 --out "$st/compressed.safetensors" >/dev/null
"$EXE" expand --model "$st/init_prenorm_delta_cls.safetensors" --add 1 --classes 5 --seed 4 \
    --out "$st/expanded.safetensors" >/dev/null
cp tests/fixtures/torch_model.safetensors "$st/torch_model.safetensors"

cp tests/fixtures/c_init_logits.npy tests/fixtures/torch_input_u8.npy "$OUT/npy/"

# the rest: F16/BF16/F64 models, configs, .npy, datasets, images
"$GEN" "$OUT" "$DATA" "$st/init_prenorm_delta_cls.safetensors" "$st/init_normed_sum_mean.safetensors" \
    "$st/train_state.safetensors" "$st/torch_model.safetensors"

# the findings (fixed crashes) stay in the corpora as regression inputs:
# findings/NAME-*.* goes to corpus/NAME for a harness NAME, the other images
# (.jpg, .png, .bmp) to corpus/image
for f in tests/fuzz/findings/*; do
    b=$(basename "$f")
    case $b in
        README.md) continue ;;
        safetensors-*|npy-*|config-*|dataset-*|image-*) cp "$f" "$OUT/${b%%-*}/" ;;
        *.jpg|*.jpeg|*.png|*.bmp) cp "$f" "$OUT/image/" ;;
        *) echo "make_corpus.sh: $f: no harness for this finding (name it HARNESS-...)" >&2; exit 1 ;;
    esac
done

for d in "$OUT"/*/; do
    printf '%-32s %3d files %7d bytes\n' "$d" "$(ls "$d" | wc -l)" "$(cat "$d"/* | wc -c)"
done
printf '%-32s           %7d bytes\n' "total" "$(cat "$OUT"/*/* | wc -c)"

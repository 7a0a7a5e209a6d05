#!/usr/bin/env bash
# tools/gpu_session.sh - everything a GPU session measures, as one prepared
# call (device time is short and every start costs minutes):
#
#   tools/gpu_session.sh [OUT_DIR] [--quick]      (default: $OUT, else runs/gpu_session)
#
# 1. tools/gpu_check.sh: build (make cuda), make test-cuda, compute-sanitizer,
#    the program on the GPU against the CPU, kill-and-resume identity
# 2. tools/gpu_bench.py: ours beside ../shared/anchors/torch_anchor.py (or
#    $ANCHOR; the checkout's .anchor/torch_anchor.py when ../shared does not
#    travel) --device cuda --compile, same call, with the ratios
#    (--quick: PyTorch eager only, about a minute less)
# 3. bench with PF_CUDA_GRAPHS=0 (what the graphs buy) and, for bf16,
#    PF_CUDA_BF16_COPY=1 (bf16 operand copies instead of cuBLAS's rounding)
# 4. tools/latency_model.py --run: the multi-GPU model's inputs, measured
# 5. tools/gpu_profile.sh vit12 256 (bf16): kernel time per kernel
# Summaries go to OUT_DIR/session.txt (and stdout); big files are removed so
# that OUT_DIR travels back. Exit status: gpu_check's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-runs/gpu_session}
QUICK=
for a in "$@"; do
    case $a in --quick) QUICK=--no-compile;; *) OUT_DIR=$a;; esac
done
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/session.txt") 2>&1
S=$(date +%s)
t() { echo "[$(( $(date +%s) - S )) s] $*"; }
ANCHOR=${ANCHOR:-../shared/anchors/torch_anchor.py}
[ -f "$ANCHOR" ] || ANCHOR=.anchor/torch_anchor.py

t "gpu_check"
tools/gpu_check.sh "$OUT_DIR/check" >/dev/null 2>&1
rc=$?
grep -E "^(FAIL|note)|passed,|ERROR SUMMARY" "$OUT_DIR/check/gpu_check.log"
grep -E "AdamW|T=65|graph|x = NULL|bf16" "$OUT_DIR/check/test_cuda.txt" | cut -c1-160
t "gpu_check exit $rc"
[ -x build/cuda/paraformer ] || { echo "no build/cuda/paraformer: stopping"; exit 1; }

t "gpu_bench ($ANCHOR${QUICK:+, eager only})"
if [ -f "$ANCHOR" ]; then
    python3 tools/gpu_bench.py --anchor "$ANCHOR" $QUICK --json "$OUT_DIR/gpu_bench.json" | grep -v '^\$'
else
    echo "no PyTorch anchor at $ANCHOR: ours only"
    python3 tools/gpu_bench.py --no-torch --json "$OUT_DIR/gpu_bench.json" | grep -v '^\$'
fi

t "switches (bench, ours)"
for m in vit12 pf3x4; do
    for v in "PF_CUDA_GRAPHS=0 --bf16" "PF_CUDA_BF16_COPY=1 --bf16" "PF_CUDA_FUSED_ATTENTION=0 --bf16"; do
        env ${v% *} timeout 120 build/cuda/paraformer bench --zoo $m --device cuda ${v#* } --batch 256 \
            --infer-batch 1024 --warm 5 --reps 20 --json >"$OUT_DIR/sw.json" 2>&1
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%-6s %-28s train %6.0f  infer %7.0f  b1 %.3f ms" % (sys.argv[2], sys.argv[3], r["train_img_s"], r["infer_img_s"], r["latency_b1_ms"]))' \
            "$OUT_DIR/sw.json" $m "${v% *}" || tail -2 "$OUT_DIR/sw.json"
    done
done
rm -f "$OUT_DIR/sw.json"

t "latency model"
python3 tools/latency_model.py --run --bf16 --json "$OUT_DIR/latency_model.json" | grep -v '^\$'

t "profile"
PROFILE_ARGS="--bf16" timeout 150 tools/gpu_profile.sh vit12 256 "$OUT_DIR/prof" >/dev/null 2>&1 && head -32 "$OUT_DIR/prof/summary.txt"
rm -f "$OUT_DIR/prof/ncu.csv"
rm -rf "$OUT_DIR/check/cli"
t "done"
exit $rc

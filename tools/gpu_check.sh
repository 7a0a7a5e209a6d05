#!/usr/bin/env bash
# tools/gpu_check.sh - the GPU backend's checks, as one prepared run on a GPU
# machine (GPU time is short: everything that can run on the CPU ran there
# first, through the emulated build in `make test`).
#
#   tools/gpu_check.sh [OUT_DIR]        (default: $OUT, else runs/gpu_check)
#
# 1. builds the backend (make cuda, sm_90; NCCL from NCCL_HOME, the toolkit,
#    or the Python package nvidia.nccl)
# 2. make test-cuda: CPU/GPU parity (fp32 <= 1e-4, bf16), determinism,
#    multi-device path as a single rank, resume, bad input (on a failure,
#    again with each switch off, to show which feature fails); then under
#    compute-sanitizer memcheck and racecheck
# 3. the program: predict and eval --sweep on the GPU against the CPU build,
#    a short train on the GPU, killed and resumed, against an uninterrupted
#    one (byte-identical checkpoints), and the no-GPU error
# Everything it prints goes, as it runs, to GPU_CHECK_LOG (default
# OUT_DIR/gpu_check.log) and test_cuda's output to GPU_CHECK_TEST_LOG
# (default OUT_DIR/test_cuda.txt): a run killed midway keeps what it did.
# Every step has a time limit, and one that runs past it is a failure.
# GPU_CHECK_BUDGET_S=N: the whole run ends within about N seconds (each step's
# limit is cut to the time left; a step that cannot start with 10 s left is
# skipped, and says so). It exits non-zero when any step fails.
# GPU_CHECK_EXE=build/paraformer_emu GPU_CHECK_NO_BUILD=1 runs step 3 against
# the emulated backend (how the script itself is tested); GPU_CHECK_CPU_EXE
# is the CPU build it compares with (default build/paraformer).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT_DIR"
LOG=${GPU_CHECK_LOG:-$OUT_DIR/gpu_check.log}
TLOG=${GPU_CHECK_TEST_LOG:-$OUT_DIR/test_cuda.txt}
exec > >(tee "$LOG") 2>&1
fails=0 skipped=0
S0=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-0}
step() { echo; echo "== [$(( $(date +%s) - S0 )) s] $*"; }
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
# seconds left in the budget (a large number without one)
left_s() { if [ "$BUDGET_S" -gt 0 ]; then echo $(( BUDGET_S - ($(date +%s) - S0) )); else echo 1000000; fi; }
# lim N: a step's limit, N seconds or the time left, whichever is less
lim() { local l; l=$(left_s); if [ "$1" -lt "$l" ]; then echo "$1"; else echo "$l"; fi; }
# T CMD...: CMD with a limit of 120 s (or the time left); 124 when it ran
# past it, or at once when no time is left
T() { local l; l=$(lim 120); [ "$l" -ge 1 ] || return 124; timeout "$l" "$@"; }
# can WHAT: 0 when at least 10 s are left, else notes WHAT as skipped
can() { [ "$(left_s)" -gt 10 ] && return 0; echo "note - skipped ($*): past GPU_CHECK_BUDGET_S=$BUDGET_S"; skipped=$((skipped + 1)); return 1; }

step "machine"
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -z "${NCCL_HOME:-}" ] && [ ! -f /usr/local/cuda/include/nccl.h ]; then
    NCCL_HOME=$(python3 -c 'import nvidia.nccl as m; print(m.__path__[0])' 2>/dev/null || true)
    export NCCL_HOME
fi
echo "NCCL_HOME=${NCCL_HOME:-(toolkit)}"

if [ -n "${GPU_CHECK_NO_BUILD:-}" ]; then
    step "build, test-cuda: skipped (GPU_CHECK_NO_BUILD)"
else
step "build"
timeout "$(lim 900)" make -j"$(nproc)" all cuda >"$OUT_DIR/build.log" 2>&1 && ok "make cuda" || {
    bad "make cuda, exit $? (124: past its limit; see $OUT_DIR/build.log)"; tail -30 "$OUT_DIR/build.log"
    command -v nvcc; ls /usr/local/cuda/lib64 2>/dev/null | grep -E 'cublas|nccl|cudart' | head; exit 1; }

step "make test-cuda (at most 300 s)"
rc=skipped
if can test_cuda; then
    timeout "$(lim 300)" build/cuda/test_cuda | tee "$TLOG"
    rc=${PIPESTATUS[0]}
    case $rc in 0) ok "test_cuda passed";; 124) bad "test_cuda ran past its limit";; *) bad "test_cuda exit $rc";; esac
fi
if [ "$rc" != 0 ] && [ "$rc" != skipped ]; then
    # which feature: the failures with each one turned off (notes, not checks)
    for v in PF_CUDA_GRAPHS=0 PF_CUDA_TC_ATTENTION=0 PF_CUDA_FUSED_ATTENTION=0 PF_CUDA_ATT_TILES=1 PF_CUDA_ROW_FUSED=0; do
        can "test_cuda with $v" || break
        env $v timeout "$(lim 120)" build/cuda/test_cuda >"$OUT_DIR/test_cuda_$v.txt" 2>&1
        vrc=$?
        echo "note - with $v: $(grep -c '^FAIL' "$OUT_DIR/test_cuda_$v.txt") failures, exit $vrc; first: $(grep -m1 '^FAIL' "$OUT_DIR/test_cuda_$v.txt" | cut -c1-150)"
    done
fi

# (--report-api-errors no: NCCL's init probes kernels with cudaFuncGetAttributes
# and gets cudaErrorNoKernelImageForDevice for architectures it was not built
# for, by design; memory errors and leaks are what this step looks for)
step "compute-sanitizer memcheck: test_cuda (at most 150 s)"
if command -v compute-sanitizer >/dev/null && can memcheck; then
    timeout "$(lim 150)" compute-sanitizer --tool memcheck --leak-check full --report-api-errors no --error-exitcode 9 build/cuda/test_cuda >"$OUT_DIR/memcheck.txt" 2>&1
    rc=$?
    grep -E "ERROR SUMMARY|passed, " "$OUT_DIR/memcheck.txt" | tail -2
    case $rc in 0) ok "memcheck: no errors";; 124) bad "memcheck ran past its limit";; *) bad "memcheck exit $rc"; grep -m5 -A6 "=========" "$OUT_DIR/memcheck.txt";; esac
fi

step "compute-sanitizer racecheck: test_cuda (shared-memory hazards; at most 100 s)"
if command -v compute-sanitizer >/dev/null && can racecheck; then
    timeout "$(lim 100)" compute-sanitizer --tool racecheck --error-exitcode 9 build/cuda/test_cuda >"$OUT_DIR/racecheck.txt" 2>&1
    rc=$?
    grep -E "RACECHECK SUMMARY|ERROR SUMMARY|passed, " "$OUT_DIR/racecheck.txt" | tail -2
    case $rc in 0) ok "racecheck: no hazards";; 124) bad "racecheck ran past its limit";; *) bad "racecheck exit $rc"; grep -m5 -A6 "=========" "$OUT_DIR/racecheck.txt";; esac
fi

step "no GPU visible"
if ! can "no GPU visible"; then :
elif CUDA_VISIBLE_DEVICES= timeout "$(lim 60)" build/cuda/test_cuda >"$OUT_DIR/nogpu.txt" 2>&1; [ $? = 77 ] && grep -q 'no CUDA device' "$OUT_DIR/nogpu.txt"; then
    ok "CUDA_VISIBLE_DEVICES='': a clear error, exit 77"
else
    bad "no-GPU run: $(tail -2 "$OUT_DIR/nogpu.txt")"
fi
fi

step "the program on the GPU (each command at most 120 s)"
if can "the program on the GPU"; then
CPU="T ${GPU_CHECK_CPU_EXE:-build/paraformer}" GPU="T ${GPU_CHECK_EXE:-build/cuda/paraformer}" D="$OUT_DIR/cli"
mkdir -p "$D"
DATA="fmnist:data/fmnist-sample"
$CPU train --data "$DATA#limit=1024" --image-size 28 --channels 1 --patch 7 --dim 32 --heads 2 --branches 3 --depth 2 \
    --classes 10 --epochs 1 --batch 64 --seed 3 --overwrite --out "$D/cpu.safetensors" --quiet >/dev/null 2>&1 \
    && ok "a CPU-trained model" || bad "CPU train"
for dev in cuda cuda:0; do
    can "eval --device $dev" || break
    $CPU eval --model "$D/cpu.safetensors" --data "$DATA" --sweep --json >"$D/eval_cpu.json" 2>&1
    $GPU eval --model "$D/cpu.safetensors" --data "$DATA" --sweep --json --device $dev >"$D/eval_gpu.json" 2>&1
    grc=$?
    if [ ! -s "$D/eval_cpu.json" ]; then bad "eval on the CPU printed nothing (past its limit?)"
    elif [ "$grc" = 124 ]; then bad "eval --device $dev ran past its limit"
    elif cmp -s "$D/eval_cpu.json" "$D/eval_gpu.json"; then ok "eval --sweep --json --device $dev equals the CPU's"
    else
        python3 - "$D/eval_cpu.json" "$D/eval_gpu.json" <<'EOF' && ok "eval --device $dev: accuracy and sweep equal, loss within 1e-4" || bad "eval --device $dev differs"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert a["accuracy"] == b["accuracy"] and a["sweep"] == b["sweep"], (a, b)
assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a["loss"], b["loss"])
EOF
    fi
done
# A staged run of 3 x 8 epochs (long enough on a GPU to be stopped in the
# middle): killed with SIGTERM as soon as its first checkpoint is written,
# resumed with --resume, and compared with the run left alone.
TRAIN=(train --data "$DATA#limit=2048" --test none --image-size 28 --channels 1 --patch 7 --dim 32 --heads 2
       --branches 3 --depth 2 --classes 10 --epochs 8 --batch 64 --seed 3 --device cuda)
for prec in "" "--bf16"; do
    name=${prec:-fp32}; name=${name#--}
    can "train, kill and resume ($name)" || break
    $GPU "${TRAIN[@]}" $prec --overwrite --out "$D/gpu_full_$name.safetensors" --log "$D/full_$name.jsonl" --quiet \
        >"$D/train_full_$name.txt" 2>&1 && ok "$name: train --device cuda $prec runs" || bad "train --device cuda $prec: $(tail -1 "$D/train_full_$name.txt")"
    rm -f "$D/gpu_split_$name.safetensors"
    ${GPU#T } "${TRAIN[@]}" $prec --out "$D/gpu_split_$name.safetensors" --log "$D/split_$name.jsonl" --quiet \
        >"$D/train_split_$name.txt" 2>&1 &
    pid=$!
    w=$(lim 60) # the first checkpoint: at most 60 s (or the time left)
    for _ in $(seq 1 $((w * 100))); do [ -f "$D/gpu_split_$name.safetensors" ] && break; sleep 0.01; done
    kill -TERM $pid 2>/dev/null
    for _ in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    kill -KILL $pid 2>/dev/null
    wait $pid
    rc=$?
    if [ "$rc" = 130 ]; then ok "$name: SIGTERM after the first checkpoint stopped the run (exit 130)"
    else bad "$name: the run was not interrupted (exit $rc): the resume check below proves nothing"; fi
    $GPU "${TRAIN[@]}" $prec --out "$D/gpu_split_$name.safetensors" --log "$D/split_$name.jsonl" --quiet \
        --resume "$D/gpu_split_$name.safetensors" >>"$D/train_split_$name.txt" 2>&1 || bad "$name: resume failed: $(tail -1 "$D/train_split_$name.txt")"
    if cmp -s "$D/gpu_full_$name.safetensors" "$D/gpu_split_$name.safetensors"; then
        ok "$name: killed and resumed ($(grep -c "\"event\":\"eval\"" "$D/split_$name.jsonl") evaluations in the log): the final checkpoint is byte-identical"
    else
        bad "$name: resumed checkpoint differs from the uninterrupted run"
    fi
done
# the GPU-trained fp32 model scored by the CPU build and by the GPU
if can "the CPU reads the GPU-trained model"; then
    $CPU eval --model "$D/gpu_full_fp32.safetensors" --data "$DATA" --sweep >"$D/eval_gpu_model.txt" 2>&1 \
        && ok "the CPU build reads the GPU-trained checkpoint: $(grep -m1 -i accuracy "$D/eval_gpu_model.txt")" \
        || bad "CPU eval of the GPU-trained model"
fi
python3 - "$D" <<'EOF' || true
import sys, os
print("checkpoints:", sorted(os.listdir(sys.argv[1])))
EOF
fi

echo
echo "gpu_check: $fails failure(s), $skipped step(s) skipped for the budget; log in $LOG"
exit $((fails != 0))

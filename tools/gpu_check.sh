#!/usr/bin/env bash
# tools/gpu_check.sh - the GPU backend's checks, as one prepared run on a GPU
# machine (GPU time is short: everything that can run on the CPU ran there
# first, through the emulated build in `make test`).
#
#   tools/gpu_check.sh [OUT_DIR]        (default: $OUT, else runs/gpu_check)
#
# 1. build: the backend (make cuda, sm_90; NCCL from NCCL_HOME, the toolkit,
#    or the Python package nvidia.nccl) and the CPU build
# 2. test: make test-cuda (build/cuda/test_cuda): CPU/GPU parity (fp32 <=
#    1e-4, bf16), graphs, determinism, the multi-device path as a single
#    rank, resume, bad input, with checked launches (a fault names its kernel)
# 3. switches: when test_cuda fails, its failing groups again with one
#    feature switch off at a time, the narrowest first (PF_CUDA_ROW_FUSED=0,
#    PF_CUDA_ATT_TILES=1, PF_CUDA_TC_ATTENTION=0, PF_CUDA_GRAPHS=0,
#    PF_CUDA_FUSED_ATTENTION=0), stopping at the first that passes: the line
#    "note - isolated: test_cuda passes with PF_CUDA_X=0" names it; when
#    none does, with all of them off
# 4. sanitize: compute-sanitizer memcheck, racecheck, initcheck and
#    synccheck on the newest kernels' tests only (test_cuda tc rows;
#    GPU_CHECK_SANITIZE_GROUPS), each at most 60 s
# 5. nogpu: test_cuda with no GPU visible exits 77 with a clear message
# 6. program: predict and eval --sweep on the GPU against the CPU build, a
#    short train on the GPU, killed and resumed, against an uninterrupted
#    one (byte-identical checkpoints)
# GPU_CHECK_STEPS="build test switches sanitize nogpu program" (the default)
# picks the steps; tools/gpu_session.sh runs them in three calls (build
# test switches; sanitize; nogpu program) with the benches before the last. Everything it prints goes, as it runs, to GPU_CHECK_LOG
# (default OUT_DIR/gpu_check.log) and test_cuda's output to
# GPU_CHECK_TEST_LOG (default OUT_DIR/test_cuda.txt): a run killed midway
# keeps what it did. Every step has a time limit, and one that runs past it
# is a failure. GPU_CHECK_BUDGET_S=N: the whole run ends within about N
# seconds (each step's limit is cut to the time left; a step that cannot
# start with 10 s left is skipped, and says so). It exits non-zero when any
# step fails.
# How the script itself is tested on the CPU (tests/test_cli.sh):
# GPU_CHECK_NO_BUILD=1 leaves out the build; GPU_CHECK_TEST_EXE is the
# test_cuda to run (default build/cuda/test_cuda); GPU_CHECK_EXE the GPU
# program (default build/cuda/paraformer; build/paraformer_emu runs step 6
# against the emulated backend) and GPU_CHECK_CPU_EXE the CPU build it
# compares with (default build/paraformer); GPU_CHECK_SANITIZER replaces
# compute-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT_DIR"
LOG=${GPU_CHECK_LOG:-$OUT_DIR/gpu_check.log}
TLOG=${GPU_CHECK_TEST_LOG:-$OUT_DIR/test_cuda.txt}
exec > >(tee "$LOG") 2>&1
# (at exit: stdout closed and tee waited for, so that the log is complete when this returns)
TEE_PID=$!
trap 'exec >&- 2>&-; wait "$TEE_PID"' EXIT
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

STEPS=" ${GPU_CHECK_STEPS:-build test switches sanitize nogpu program} "
want() { case $STEPS in *" $1 "*) return 0;; esac; return 1; }
[ -n "${GPU_CHECK_NO_BUILD:-}" ] && STEPS=${STEPS// build / }
echo "steps:$STEPS"
TEST=${GPU_CHECK_TEST_EXE:-build/cuda/test_cuda}
# the groups of a test_cuda log that failed (a crash or a timeout: the last one begun too)
failed_groups() {
    awk -v crashed="$2" '/^# [a-z0-9]+:/ { g = substr($2, 1, length($2) - 1) }
        /^FAIL/ && g != "" { f[g] = 1 } END { if (crashed && g != "") f[g] = 1; for (k in f) printf "%s ", k }' "$1"
}

if want build; then
step "build"
timeout "$(lim 900)" make -j"$(nproc)" all cuda >"$OUT_DIR/build.log" 2>&1 && ok "make cuda" || {
    bad "make cuda, exit $? (124: past its limit; see $OUT_DIR/build.log)"; tail -30 "$OUT_DIR/build.log"
    command -v nvcc; ls /usr/local/cuda/lib64 2>/dev/null | grep -E 'cublas|nccl|cudart' | head; exit 1; }
grep -m1 '^cuda_gate:' "$OUT_DIR/build.log"
fi

rc=skipped
if want test; then
step "make test-cuda: $TEST (at most 300 s)"
if can test_cuda; then
    timeout "$(lim 300)" "$TEST" | tee "$TLOG"
    rc=${PIPESTATUS[0]}
    case $rc in 0) ok "test_cuda passed";; 124) bad "test_cuda ran past its limit";; *) bad "test_cuda exit $rc";; esac
fi
fi

if want switches && [ "$rc" != 0 ] && [ "$rc" != skipped ]; then
    # which feature: the failing groups again with each switch off, the
    # narrowest first (notes, not checks); the first that passes isolates it
    crashed=0; [ "$rc" != 1 ] && crashed=1
    groups=$(failed_groups "$TLOG" $crashed)
    step "switches: test_cuda ${groups:-(all)}with one feature off at a time"
    found=
    for v in PF_CUDA_ROW_FUSED=0 PF_CUDA_ATT_TILES=1 PF_CUDA_TC_ATTENTION=0 PF_CUDA_GRAPHS=0 PF_CUDA_FUSED_ATTENTION=0 \
             "PF_CUDA_ROW_FUSED=0 PF_CUDA_ATT_TILES=1 PF_CUDA_TC_ATTENTION=0 PF_CUDA_GRAPHS=0 PF_CUDA_FUSED_ATTENTION=0"; do
        can "test_cuda with $v" || break
        f="$OUT_DIR/test_cuda_${v%%=*}.txt"
        # shellcheck disable=SC2086
        env $v timeout "$(lim 120)" "$TEST" $groups >"$f" 2>&1
        vrc=$?
        echo "note - with $v: $(grep -c '^FAIL' "$f") failures, exit $vrc; first: $(grep -m1 '^FAIL' "$f" | cut -c1-150)"
        if [ "$vrc" = 0 ]; then found=$v; break; fi
    done
    case $found in
        "") echo "note - isolated: no switch (the failure is in a path every switch leaves on)";;
        *" "*) echo "note - isolated: none alone; test_cuda passes with every switch off";;
        *) echo "note - isolated: test_cuda passes with $found";;
    esac
fi

if want sanitize; then
# (--report-api-errors no: NCCL's init probes kernels with cudaFuncGetAttributes
# and gets cudaErrorNoKernelImageForDevice for architectures it was not built
# for, by design; memory errors and leaks are what memcheck looks for)
SAN_GROUPS=${GPU_CHECK_SANITIZE_GROUPS:-tc rows}
SANITIZER=${GPU_CHECK_SANITIZER:-compute-sanitizer}
if ! command -v "$SANITIZER" >/dev/null; then
    step "compute-sanitizer"
    echo "note - skipped (sanitizers): $SANITIZER not found"; skipped=$((skipped + 1))
else
    for tool in memcheck racecheck initcheck synccheck; do
        step "compute-sanitizer $tool: test_cuda $SAN_GROUPS (at most 60 s)"
        can "$tool" || continue
        case $tool in
            memcheck) extra="--leak-check full --report-api-errors no";;
            *) extra="--report-api-errors no";;
        esac
        # shellcheck disable=SC2086
        timeout "$(lim 60)" "$SANITIZER" --tool $tool $extra --error-exitcode 9 "$TEST" $SAN_GROUPS \
            >"$OUT_DIR/$tool.txt" 2>&1
        src=$?
        grep -E "(ERROR|RACECHECK|INITCHECK|SYNCCHECK) SUMMARY|passed, " "$OUT_DIR/$tool.txt" | tail -2
        case $src in
            0) ok "$tool: no errors";;
            124) bad "$tool ran past its limit";;
            *) bad "$tool exit $src"; grep -m5 -A6 "=========" "$OUT_DIR/$tool.txt";;
        esac
    done
fi
fi

if want nogpu; then
step "no GPU visible"
if ! can "no GPU visible"; then :
elif CUDA_VISIBLE_DEVICES= timeout "$(lim 60)" "$TEST" bad >"$OUT_DIR/nogpu.txt" 2>&1; [ $? = 77 ] && grep -q 'no CUDA device' "$OUT_DIR/nogpu.txt"; then
    ok "CUDA_VISIBLE_DEVICES='': a clear error, exit 77"
else
    bad "no-GPU run: $(tail -2 "$OUT_DIR/nogpu.txt")"
fi
fi

want program && step "the program on the GPU (each command at most 120 s)"
if want program && can "the program on the GPU"; then
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
    elif [ "$grc" != 0 ]; then bad "eval --device $dev: exit $grc: $(tail -1 "$D/eval_gpu.json")"
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
    for _ in $(seq 1 $(( $(lim 10) * 10 ))); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
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
echo "gpu_check: $fails failure(s), $skipped step(s) skipped (see the notes); log in $LOG"
exit $((fails != 0))

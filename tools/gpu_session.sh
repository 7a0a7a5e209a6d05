#!/usr/bin/env bash
# tools/gpu_session.sh - everything a GPU session measures, as one prepared
# call (device time is short and every start costs minutes):
#
#   tools/gpu_session.sh [OUT_DIR] [--quick]      (default: $OUT, else runs/gpu_session)
#
# The steps, in order of what they are worth, each within the budget:
# 1. tools/gpu_check.sh build test switches: make cuda, test_cuda (checked
#    launches), and on a failure the feature switch that isolates it (the
#    narrowest first); until 45 % of BUDGET_S
# 2. tools/gpu_check.sh sanitize: compute-sanitizer memcheck, racecheck,
#    initcheck, synccheck on the newest kernels' tests; until 55 %
# 3. tools/gpu_bench.py: ours beside the PyTorch reference model
#    (tools/torch_ref.py --device cuda: eager per model, then torch.compile
#    per model; --quick: eager only), same call, with the ratios; until 97 %
# 4. what time is left: tools/gpu_check.sh nogpu program (the program on
#    the GPU against the CPU, kill and resume), tools/latency_model.py
#    --run, the bf16 bench with each switch off (what each feature buys),
#    tools/gpu_profile.sh vit12 256
# A step that cannot start with 10 s of its share left is skipped and says
# so; every command is cut at the end of its share, so the session ends
# before BUDGET_S (default 480: a device call may last 600).
# When test_cuda fails and passes with one switch off, steps 2-4 run with
# that switch off, so that the session still measures.
# OUT_DIR gets at most eight files (what a device call brings back), each
# written as its step runs: session.txt (the summary), gpu_check.log (step
# 1), test_cuda.txt, sanitize.log (step 2), gpu_bench.json,
# gpu_check_more.log (step 4's checks), latency_model.json, profile.txt;
# the rest stays in runs/gpu_session_work.
# Exit status: 0 when the checks of steps 1, 2 and 4 passed, else 1.
# On the CPU (how tests/test_cli.sh tests it): GPU_CHECK_NO_BUILD,
# GPU_CHECK_TEST_EXE, GPU_CHECK_EXE and GPU_CHECK_CPU_EXE pass to
# gpu_check.sh; GPU_BENCH_ARGS are added to gpu_bench.py's arguments;
# GPU_SESSION_WORK replaces runs/gpu_session_work.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-runs/gpu_session}
QUICK=
for a in "$@"; do
    case $a in --quick) QUICK=--no-compile;; *) OUT_DIR=$a;; esac
done
WORK=${GPU_SESSION_WORK:-runs/gpu_session_work}
mkdir -p "$OUT_DIR" "$WORK"
exec > >(tee "$OUT_DIR/session.txt") 2>&1
# (at exit: stdout closed and tee waited for, so that the log is complete when this returns)
TEE_PID=$!
trap 'exec >&- 2>&-; wait "$TEE_PID"' EXIT
S=$(date +%s)
B=${BUDGET_S:-480}
t() { echo "[$(( $(date +%s) - S )) s] $*"; }
# until P: the seconds from now to P % of the budget (0 when past it)
until_pct() { local u=$(( B * $1 / 100 - ($(date +%s) - S) )); [ "$u" -gt 0 ] && echo "$u" || echo 0; }
# share P WHAT: 0 when at least 10 s are left before P % of the budget, else says WHAT is skipped
share() { [ "$(until_pct "$1")" -gt 10 ] && return 0; t "skipped ($2): past its share of BUDGET_S=$B"; return 1; }
# check STEPS P LOG: gpu_check.sh's STEPS, ended at P % of the budget (its
# own budget ends 3 s sooner, so that it usually stops by itself)
check() {
    local l r; l=$(until_pct "$2")
    GPU_CHECK_STEPS="$1" GPU_CHECK_BUDGET_S=$(( l > 6 ? l - 3 : l )) GPU_CHECK_LOG="$3" \
        timeout -k 2 "$l" tools/gpu_check.sh "$WORK/check" >/dev/null 2>&1
    r=$?
    [ "$r" = 124 ] || [ "$r" = 137 ] && echo "FAIL - gpu_check.sh ($1) cut at the end of its share" >>"$3"
    return $r
}
rc=0
GPU_EXE=${GPU_CHECK_EXE:-build/cuda/paraformer}

t "1. build, test_cuda, switches (until $((B * 45 / 100)) s)"
GPU_CHECK_TEST_LOG="$OUT_DIR/test_cuda.txt" check "build test switches" 45 "$OUT_DIR/gpu_check.log" || rc=1
grep -E "^(FAIL|note)|passed,|^cuda_gate|gpu_check:" "$OUT_DIR/gpu_check.log"
[ -x "$GPU_EXE" ] || { t "no $GPU_EXE: stopping"; exit 1; }
# a feature that fails on the GPU (test_cuda passes only with its switch
# off): the later steps run with it off, so that the session still measures
fix=$(sed -nE 's/^note - isolated: test_cuda passes with (PF_CUDA_[A-Z_]+=[0-9]+)$/\1/p' "$OUT_DIR/gpu_check.log")
[ -n "$fix" ] && { export "${fix?}"; t "test_cuda passes only with $fix: the later steps run with it"; }

if share 55 sanitizers; then
    t "2. sanitizers on the newest kernels (until $((B * 55 / 100)) s)"
    check sanitize 55 "$OUT_DIR/sanitize.log" || rc=1
    grep -E "^(FAIL|ok|note)|SUMMARY" "$OUT_DIR/sanitize.log"
fi

if share 97 gpu_bench; then
    t "3. gpu_bench (tools/torch_ref.py${QUICK:+, eager only}; until $((B * 97 / 100)) s)"
    torch=
    python3 -c 'import torch' 2>/dev/null || { torch=--no-torch; echo "python3 cannot import torch: ours only"; }
    # shellcheck disable=SC2086
    l=$(until_pct 97)
    timeout -k 2 "$l" python3 tools/gpu_bench.py $QUICK $torch --budget "$(( l > 6 ? l - 3 : l ))" \
        --json "$OUT_DIR/gpu_bench.json" ${GPU_BENCH_ARGS:-} | grep -v '^\$'
fi

if share 100 "the program's checks"; then
    t "4. the program on the GPU (what is left)"
    check "nogpu program" 99 "$OUT_DIR/gpu_check_more.log" || rc=1
    grep -E "^(FAIL|note)|gpu_check:" "$OUT_DIR/gpu_check_more.log"
fi

share 99 "latency model" && t "latency model" &&
    timeout "$(until_pct 99)" python3 tools/latency_model.py --run --bf16 --json "$OUT_DIR/latency_model.json" |
    grep -v '^\$'

share 99 switches && t "switches (bench, ours)" &&
for m in vit12 pf4x3; do
    for v in "PF_CUDA_GRAPHS=0 --bf16" "PF_CUDA_TC_ATTENTION=0 --bf16" "PF_CUDA_FUSED_ATTENTION=0 --bf16" "PF_CUDA_ROW_FUSED=0 --bf16" "PF_CUDA_ROW_FUSED=1 --bf16"; do
        share 99 "switch $v" || break 2
        l=$(until_pct 99); [ "$l" -gt 120 ] && l=120
        env ${v% *} timeout "$l" "$GPU_EXE" bench --zoo $m --device cuda ${v#* } --batch 256 \
            --infer-batch 1024 --warm 5 --reps 20 --json >"$WORK/sw.json" 2>&1
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%-6s %-28s train %6.0f  infer %7.0f  b1 %.3f ms" % (sys.argv[2], sys.argv[3], r["train_img_s"], r["infer_img_s"], r["latency_b1_ms"]))' \
            "$WORK/sw.json" $m "${v% *}" 2>/dev/null || echo "$m ${v% *}: $(tail -1 "$WORK/sw.json")"
    done
done

share 99 profile && t "profile" &&
    PROFILE_ARGS="--bf16" timeout "$(until_pct 99)" tools/gpu_profile.sh vit12 256 "$WORK/prof" >/dev/null 2>&1 &&
    cp "$WORK/prof/summary.txt" "$OUT_DIR/profile.txt" && head -32 "$OUT_DIR/profile.txt"
t "done (budget $B s), exit $rc"
exit $rc

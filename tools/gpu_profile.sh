#!/usr/bin/env bash
# tools/gpu_profile.sh - where the GPU backend's time goes: Nsight Compute
# (ncu) times every kernel of one bench run (a training step, an inference
# call and three batch-1 calls) and the kernels are summed by name; the
# backend's kernels are lambdas, named here by their function and instance
# (pfc_layers_forward#2 is the second kernel lambda in pfc_layers_forward).
#
#   tools/gpu_profile.sh [MODEL [BATCH [OUT_DIR]]]   (default vit12 256 $OUT or runs/gpu_profile)
#   PROFILE_ARGS="--bf16" tools/gpu_profile.sh pf4x3    (MODEL: pfBxL / vitN, as bench --zoo)
#   tools/gpu_profile.sh --summary ncu.csv           (only the summary of a saved CSV)
#
# Needs build/cuda/paraformer (make cuda) and ncu on PATH. ncu serialises the
# kernels and fixes the clocks, so the times are for comparing kernels with
# each other, not for img/s (bench --device cuda is for that).
set -uo pipefail
cd "$(dirname "$0")/.."
summary() {
    python3 - "$1" <<'EOF'
import collections, csv, re, sys
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
if not rows:
    sys.exit("gpu_profile: %s has no ncu rows" % sys.argv[1])
h = rows[0]
ik, iv, iu = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
def lambda_name(name):
    """'f#2' for the 2nd kernel lambda of function f; 'pfc_colsums#1 < g#3' when
    the lambda of a template function was instantiated with g's lambda #3"""
    found, at = [], name.find(")::[lambda(")
    while at >= 0:
        depth, i = 0, at
        while i >= 0:  # back to the '(' that opens the function's arguments
            depth += name[i] == ")"
            depth -= name[i] == "("
            if depth == 0:
                break
            i -= 1
        j = i
        if j > 0 and name[j - 1] == ">":  # skip template arguments
            depth, j = 0, j - 1
            while j >= 0:
                depth += name[j] == ">"
                depth -= name[j] == "<"
                if depth == 0:
                    break
                j -= 1
        m = re.search(r"(\w+)$", name[:j])
        inst = re.match(r"\)::\[lambda\([^)]*\) \(instance (\d+)\)\]", name[at:])
        if m and inst:
            found.append("%s#%s" % (m.group(1), inst.group(1)))
        at = name.find(")::[lambda(", at + 1)
    if not found:
        return None
    return found[-1] + ("".join(" < " + f for f in found[:-1]) if len(found) > 1 else "")


tot, cnt = collections.defaultdict(float), collections.Counter()
for r in rows[1:]:
    try:
        v = float(r[iv].replace(",", "")) * scale[r[iu]]
    except (ValueError, KeyError):
        continue
    key = lambda_name(r[ik]) or r[ik][:80]
    tot[key] += v
    cnt[key] += 1
all_us = sum(tot.values())
print("kernel time %.2f ms in %d kernels" % (all_us / 1e3, sum(cnt.values())))
print("%10s %6s %7s  %s" % ("ms", "share", "calls", "kernel"))
for k, v in sorted(tot.items(), key=lambda kv: -kv[1])[:30]:
    print("%10.2f %5.1f%% %7d  %s" % (v / 1e3, 100 * v / all_us, cnt[k], k))
EOF
}
if [ "${1:-}" = "--summary" ]; then summary "$2"; exit $?; fi
MODEL=${1:-vit12} BATCH=${2:-256} DIR=${3:-${OUT:-runs/gpu_profile}}
mkdir -p "$DIR"
command -v ncu >/dev/null || { echo "gpu_profile: ncu (Nsight Compute) not on PATH" >&2; exit 1; }
[ -x build/cuda/paraformer ] || { echo "gpu_profile: build/cuda/paraformer missing: make cuda" >&2; exit 1; }
# shellcheck disable=SC2086 # PROFILE_ARGS is a list of flags
ncu --csv --metrics gpu__time_duration.sum --launch-count 5000 build/cuda/paraformer bench --zoo "$MODEL" \
    --batch "$BATCH" --infer-batch "$BATCH" --warm 0 --reps 1 --device cuda ${PROFILE_ARGS:-} \
    >"$DIR/ncu.csv" 2>"$DIR/ncu.err" || { echo "gpu_profile: ncu failed:" >&2; tail -5 "$DIR/ncu.err" >&2; exit 1; }
summary "$DIR/ncu.csv" | tee "$DIR/summary.txt"

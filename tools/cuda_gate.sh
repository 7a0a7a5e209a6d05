#!/bin/sh
# tools/cuda_gate.sh - the register, spill and parameter gate of `make cuda`:
#
#   tools/cuda_gate.sh PTXAS_LOG PTX [MAX_PARAM_BYTES]
#
# PTXAS_LOG is what `nvcc -Xptxas -v` printed while compiling the backend,
# PTX the same source compiled with `nvcc -ptx`. Prints the kernel count,
# the most registers a kernel uses, the spill bytes and the largest kernel
# parameter block, and exits 1 when a kernel spills (stores or loads to
# local memory: registers ran out) or its parameters exceed MAX_PARAM_BYTES
# (default 4096: the limit before CUDA 12.1, kept so the kernels' lambdas
# stay small). A kernel that spills is named.
set -u
LOG=${1:?usage: cuda_gate.sh PTXAS_LOG PTX [MAX_PARAM_BYTES]}
PTX=${2:?usage: cuda_gate.sh PTXAS_LOG PTX [MAX_PARAM_BYTES]}
MAXP=${3:-4096}
for f in "$LOG" "$PTX"; do
    [ -r "$f" ] || { echo "cuda_gate: $f: cannot read it" >&2; exit 2; }
done
# ptxas -v: "Compiling entry function 'NAME'", then "N bytes spill stores,
# M bytes spill loads" and "Used R registers"
awk -v maxp="$MAXP" -v ptx="$PTX" '
    /Compiling entry function/ { name = $0; sub(/.*function \047/, "", name); sub(/\047.*/, "", name); n++ }
    /bytes spill stores/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) == "bytes" && $(i + 2) == "spill" && $(i + 3) == "stores,") st = $i + 0
            if ($(i + 1) == "bytes" && $(i + 2) == "spill" && $(i + 3) == "loads") ld = $i + 0
        }
        if (st + ld > 0) { spills += st + ld; bad = bad sprintf("  %s: %d bytes spill stores, %d bytes spill loads\n", name, st, ld) }
    }
    /Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($i == "Used") { r = $(i + 1) + 0; if (r > maxr) maxr = r } }
    END {
        # the parameters of each .entry in the PTX: .param .align A .b8 x[N] is N bytes, .param .u64 x is 8
        while ((getline line < ptx) > 0) {
            if (line ~ /\.entry /) { ename = line; sub(/.*\.entry /, "", ename); sub(/\(.*/, "", ename); psum = 0; inent = 1; ne++ }
            else if (inent && line ~ /\.param /) {
                if (match(line, /\[[0-9]+\]/)) psum += substr(line, RSTART + 1, RLENGTH - 2) + 0
                else if (line ~ /\.(u|s|b|f)64 /) psum += 8
                else if (line ~ /\.(u|s|b|f)32 /) psum += 4
                else if (line ~ /\.(u|s|b|f)16 /) psum += 2
                else psum += 1
            } else if (inent && line ~ /^\)/) {
                inent = 0
                if (psum > maxparam) { maxparam = psum; maxname = ename }
                if (psum > maxp) bigp = bigp sprintf("  %s: %d bytes of parameters\n", ename, psum)
            }
        }
        close(ptx)
        printf "cuda_gate: %d kernels (ptxas), %d in the PTX; at most %d registers; %d bytes spilled; largest parameter block %d bytes (limit %d)\n", n, ne, maxr, spills, maxparam, maxp
        if (n == 0 || ne == 0) { print "cuda_gate: no kernels found: is this the output of nvcc -Xptxas -v and nvcc -ptx?" > "/dev/stderr"; exit 1 }
        if (bad != "") printf "cuda_gate: kernels spill registers to local memory:\n%s", bad > "/dev/stderr"
        if (bigp != "") printf "cuda_gate: kernels with more than %d bytes of parameters:\n%s", maxp, bigp > "/dev/stderr"
        exit (bad != "" || bigp != "") ? 1 : 0
    }' "$LOG"

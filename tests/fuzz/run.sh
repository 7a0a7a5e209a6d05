#!/usr/bin/env bash
# Runs the fuzz harnesses one after the other (`make fuzz-run` calls this
# after `make fuzz`), each for FUZZ_S seconds on a scratch copy of its seed
# corpus, and fails if any of them crashed.
#
#   FUZZ_S=60 FUZZ_BUILD=build-fuzz tests/fuzz/run.sh safetensors npy config dataset image
#
# For each harness NAME: build-fuzz/run/NAME/ holds the scratch corpus
# (corpus/: the committed seeds of tests/fuzz/corpus/NAME plus what the run
# found; the committed folder is never written), the scratch folder of the
# harness's files (tmp/, as TMPDIR), libFuzzer's output (log) and, after a
# crash, the input that caused it (crash-*, leak-*, timeout-*, oom-*). Limits: -max_len per
# harness (below), -rss_limit_mb=2048 (also the largest single allocation),
# -timeout=30 s per input, tests/fuzz/NAME.dict when there is one. At the
# end a table gives each harness's executions and coverage (libFuzzer's
# cov: edges); a crash prints the sanitizer's report, where the input was
# saved, the command that reproduces it, and the input in base64 (up to
# 64 KiB) so that a CI log alone is enough to reproduce it.
set -uo pipefail

S=${FUZZ_S:-60}
B=${FUZZ_BUILD:-build-fuzz}
# FUZZ_RUNS=N: N inputs from seed 1 instead of FUZZ_S seconds, the same
# inputs on every machine (CI: a submission passes or fails by its code,
# not by how fast the machine was)
R=${FUZZ_RUNS:-}
if [ -n "$R" ]; then limit=(-runs="$R" -seed=1); what="$R runs from seed 1"; else limit=(-max_total_time="$S"); what="$S s"; fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
# ASan fills every allocation (not only its first 4 KiB) with 0xbe, so that
# code reading memory it never wrote reads the same bytes on every run and
# a crash reproduces from its input alone
export ASAN_OPTIONS=${ASAN_OPTIONS:-max_malloc_fill_size=2147483647}

max_len() {
    case $1 in
        safetensors|dataset) echo 65536 ;;
        image) echo 32768 ;;
        npy) echo 16384 ;;
        config) echo 4096 ;;
        *) echo 65536 ;;
    esac
}

failed=()
summary=()
for name in "$@"; do
    bin=$B/fuzz_$name
    run=$B/run/$name
    [ -x "$bin" ] || { echo "error: $bin is not built (make fuzz)" >&2; exit 1; }
    rm -rf "$run"
    mkdir -p "$run/corpus" "$run/tmp"
    if [ -d "tests/fuzz/corpus/$name" ]; then cp tests/fuzz/corpus/"$name"/* "$run/corpus/"; fi
    seeds=$(ls "$run/corpus" | wc -l)
    dict=()
    if [ -f "tests/fuzz/$name.dict" ]; then dict=(-dict="tests/fuzz/$name.dict"); fi
    echo "== fuzz_$name: $what, $seeds seeds, -max_len=$(max_len "$name")"
    TMPDIR=$run/tmp "$bin" "${limit[@]}" -max_len="$(max_len "$name")" -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$run/" "${dict[@]}" "$run/corpus" >"$run/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$run/log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '%-12s ok       %10s execs  %s  corpus %d -> %d' "$name" "${execs:-?}" "${cov:-cov: ?}" \
            "$seeds" "$(ls "$run/corpus" | wc -l)")")
        continue
    fi
    failed+=("$name")
    summary+=("$(printf '%-12s FAILED   %10s execs  %s  (exit %d)' "$name" "${execs:-?}" "${cov:-cov: ?}" "$rc")")
    echo "-- fuzz_$name failed (exit $rc); libFuzzer's output without its progress lines:"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED|RELOAD)' "$run/log" | tail -n 150
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$run/log"); do
        echo "-- the input was saved to $a ($(wc -c <"$a") bytes); reproduce with:"
        echo "     $bin $a"
        echo "   (PF_FUZZ_VERBOSE=1 in front shows how far it gets)"
        if [ "$(wc -c <"$a")" -le 65536 ]; then
            echo "-- the input in base64 (base64 -d > crash.bin):"
            base64 -w 76 "$a"
        fi
    done
    [ -n "$(ls "$run/tmp")" ] && rm -rf "$run"/tmp/*
done

echo "== fuzz summary ($what each)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: fuzzing found a problem in: ${failed[*]} (see above; inputs under $B/run/<harness>/)" >&2
    exit 1
fi

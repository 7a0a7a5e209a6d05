#!/usr/bin/env bash
# run_all.sh - runs test programs and adds up their counts (used by `make test`).
#
#   tests/run_all.sh PROGRAM...
#
# Every PROGRAM prints one line per check and ends with `N passed, M failed`.
# Its output is shown as it runs; afterwards one summary line per program, a
# TOTAL line and, as the very last line, the summed `N passed, M failed`.
#
# A program counts as failed (one extra failure on top of its own count) when
# it exits non-zero, is killed by a signal (a crash, a sanitizer report), runs
# past PF_TEST_TIMEOUT seconds (default 1800), or prints no count line — even
# if the counts it printed say otherwise. Exit status: 0 only when nothing
# failed. Runs from the repository root; tests find the program to run in
# $PARAFORMER_EXE (default build/paraformer), and test_cli.sh the program
# with the emulated GPU backend in $PARAFORMER_EMU (none: not tested).
set -u

cd "$(dirname "$0")/.." || exit 2
export PARAFORMER_EXE="${PARAFORMER_EXE:-build/paraformer}"
# Sanitizer builds: abort on the first report so that it cannot be missed,
# keep leak checking on. A user's own settings win.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
timeout_s="${PF_TEST_TIMEOUT:-1800}"

if [ $# -eq 0 ]; then
    echo "usage: tests/run_all.sh PROGRAM..." >&2
    echo "0 passed, 1 failed"
    exit 2
fi

total_pass=0 total_fail=0 n_bad=0
summary=()
log=$(mktemp) || exit 2
trap 'rm -f "$log"' EXIT

for prog in "$@"; do
    echo
    echo "=== $prog"
    if [ ! -x "$prog" ]; then
        echo "✗ $prog: not found or not executable"
        total_fail=$((total_fail + 1)) n_bad=$((n_bad + 1))
        summary+=("$(printf '✗ %-32s not built' "$prog")")
        continue
    fi
    start=$(date +%s)
    # The program's stdout and stderr both go to the terminal and the log.
    timeout -k 10 "$timeout_s" "$prog" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    # The program's own count: the last line of the form `N passed, M failed`.
    counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    p=0 f=0 note=""
    if [ -n "$counts" ]; then
        p=${counts%% passed*}
        f=${counts#*passed, }; f=${f%% failed*}
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note="timed out after ${timeout_s}s"
    elif [ "$rc" -gt 128 ]; then
        note="killed by signal $((rc - 128))"
    elif [ "$rc" -ne 0 ]; then
        note="exit status $rc"
    fi
    if [ -z "$counts" ]; then
        note="${note:+$note, }no count line"
    fi
    if [ -n "$note" ] && [ "$f" -eq 0 ]; then
        f=1   # a crash or a missing count line is a failure whatever was printed
    elif [ -n "$note" ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
        f=$((f + 1))   # failures were reported, and then it crashed as well
    fi
    if [ "$rc" -eq 0 ] && [ "$f" -gt 0 ]; then
        note="${note:+$note, }reported failures but exited 0"
    fi
    total_pass=$((total_pass + p)) total_fail=$((total_fail + f))
    if [ "$f" -gt 0 ]; then
        mark="✗"; n_bad=$((n_bad + 1))
    else
        mark="✓"
    fi
    summary+=("$(printf '%s %-32s %4d passed, %d failed  (%ds)%s' "$mark" "$prog" "$p" "$f" "$secs" "${note:+  [$note]}")")
done

echo
echo "=== summary"
for line in "${summary[@]}"; do echo "$line"; done
echo "TOTAL: $total_pass passed, $total_fail failed in $# programs ($n_bad with failures)"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

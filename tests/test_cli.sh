#!/usr/bin/env bash
# test_cli.sh - the `paraformer` program fed bad flags and bad files.
#
#   tests/test_cli.sh [PROGRAM]      (default $PARAFORMER_EXE or build/paraformer)
#   PARAFORMER_EMU=build/paraformer_emu tests/test_cli.sh    also --device cuda
#
# Every bad invocation must exit with a non-zero status below 126 (not a
# crash, not a signal), print nothing from a sanitizer, and say on stderr what
# is wrong: the offending flag or value, or the path of the offending file. A
# few good invocations check that the program works at all (the numbers are
# tested by tests/test_interop.c). Failed commands must not leave their output
# file (or a temporary) behind. Prints one line per check and
# `N passed, M failed`; exit status 1 on any failure. Run from the repo root.
set -u

EXE="${1:-${PARAFORMER_EXE:-build/paraformer}}"
FIX=tests/fixtures
pass=0 fail=0

if [ ! -x "$EXE" ]; then
    echo "FAIL - $EXE not found or not executable (run make)"
    echo "0 passed, 1 failed"
    exit 1
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/pf_cli.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT

ok() { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
first_line() { head -n 1 "$1" | cut -c1-200; }

# expect_fail LABEL 'PATTERN[|PATTERN...]' CMD...: the command fails cleanly
# and its stderr contains one of the patterns (fixed strings).
expect_fail() {
    local label=$1 pats=$2 p rc
    local -a g=()
    shift 2
    IFS='|' read -r -a parts <<<"$pats"
    for p in "${parts[@]}"; do g+=(-e "$p"); done
    "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ "$rc" -eq 0 ]; then
        bad "$label: exited 0"
    elif [ "$rc" -ge 126 ]; then
        bad "$label: exit status $rc (crash or signal): $(first_line "$T/err")"
    elif grep -q -e 'Sanitizer' -e 'runtime error:' "$T/err"; then
        bad "$label: sanitizer report: $(grep -m1 -e 'Sanitizer' -e 'runtime error:' "$T/err" | cut -c1-200)"
    elif [ ! -s "$T/err" ]; then
        bad "$label: exit status $rc but nothing on stderr"
    elif ! grep -qF "${g[@]}" "$T/err"; then
        bad "$label: stderr does not mention '$pats': $(first_line "$T/err")"
    else
        ok "$label: exit $rc: $(first_line "$T/err")"
    fi
}

# expect_ok LABEL CMD...: the command succeeds without a sanitizer report.
expect_ok() {
    local label=$1 rc
    shift
    "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ "$rc" -ne 0 ]; then
        bad "$label: exit status $rc: $(first_line "$T/err")"
    elif grep -q -e 'Sanitizer' -e 'runtime error:' "$T/err"; then
        bad "$label: sanitizer report: $(grep -m1 -e 'Sanitizer' -e 'runtime error:' "$T/err" | cut -c1-200)"
    else
        ok "$label"
    fi
}

# no_file LABEL PATH: a failed write left neither PATH nor PATH.* behind.
no_file() {
    local left
    left=$(ls -d "$2" "$2".* 2>/dev/null | head -n 3 | tr '\n' ' ')
    if [ -n "$left" ]; then bad "$1: left behind: $left"; else ok "$1"; fi
}

# st_write PATH JSON: a safetensors file with header JSON and no data.
st_write() {
    local n=${#2} i b=""
    for i in 0 1 2 3 4 5 6 7; do b+=$(printf '\\%03o' $(((n >> (8 * i)) & 255))); done
    printf "$b" >"$1"
    printf '%s' "$2" >>"$1"
}

echo "# $EXE, files in $T"

# --- files used below --------------------------------------------------------
M="$T/model.safetensors"   # a small valid model for 16x16x3 input
SMALL=(--image-size 16 --channels 3 --patch 4 --dim 16 --heads 2 --mlp-dim 32 --branches 2 --depth 1 --classes 4)
expect_ok "init a small model (16x16x3, PF(2x1), 4 classes)" "$EXE" init --out "$M" "${SMALL[@]}" --seed 3
M8="$T/model8.safetensors"  # the same for 8x8 input
expect_ok "init a model for 8x8 input" "$EXE" init --out "$M8" "${SMALL[@]}" --image-size 8 --seed 4
X="$FIX/torch_input.npy"         # float32 [5,3,16,16]
XU8="$FIX/torch_input_u8.npy"    # uint8 [5,16,16,3]
FIXM="$FIX/torch_model.safetensors"
size=$(wc -c <"$M")
head -c $((size / 2)) "$M" >"$T/trunc.safetensors"                 # cut inside the data
head -c 100 "$M" >"$T/trunc_header.safetensors"                    # cut inside the header
tail -c +101 "$FIX/torch_logits.npy" >"$T/garbage.safetensors"     # float bytes: garbage
: >"$T/empty.safetensors"
head -c 60 "$X" >"$T/trunc_header.npy"                             # cut inside the .npy header
head -c 1000 "$X" >"$T/trunc_data.npy"                             # cut inside the data
tail -c +101 "$FIX/torch_logits.npy" >"$T/garbage.npy"
cp "$T/garbage.npy" "$T/garbage.png"                                 # not an image
printf 'P6\n16 16\n255\n' >"$T/wrong_ext.bmp"                        # a PPM named .bmp
mkdir -p "$T/adir.npy"
CFG='"image_size": 8, "channels": 1, "patch_size": 4, "mlp_dim": 16, "classes": 3, "residual": "prenorm", "aggregate": "delta", "qkv_bias": true, "pool": "cls"'
CFG_BIG="{$CFG, \"dim\": 8, \"heads\": 2, \"branches\": 16, \"depth\": 16}"
CFG_HEADS="{$CFG, \"dim\": 8, \"heads\": 3, \"branches\": 1, \"depth\": 1}"
st_write "$T/no_config.safetensors" '{"__metadata__":{"format":"paraformer"}}'
st_write "$T/cfg_big.safetensors" "{\"__metadata__\":{\"format\":\"paraformer\",\"config\":\"${CFG_BIG//\"/\\\"}\"}}"
st_write "$T/cfg_heads.safetensors" "{\"__metadata__\":{\"format\":\"paraformer\",\"config\":\"${CFG_HEADS//\"/\\\"}\"}}"

# --- flags -----------------------------------------------------------------
expect_fail "unknown command" "frobnicate" "$EXE" frobnicate
expect_fail "unknown option" "--bogus-flag" "$EXE" init --out "$T/x.safetensors" --bogus-flag
expect_fail "option without its value" "--dim" "$EXE" init --out "$T/x.safetensors" --dim
expect_fail "not a number" "abc" "$EXE" init --out "$T/x.safetensors" --dim abc
expect_fail "number too large for an int" "99999999999999999999" "$EXE" init --out "$T/x.safetensors" --dim 99999999999999999999
expect_fail "negative width" "--dim|-16|dim" "$EXE" init --out "$T/x.safetensors" --dim -16
expect_fail "heads not dividing dim" "heads" "$EXE" init --out "$T/x.safetensors" --dim 10 --heads 3
expect_fail "patch not dividing the image" "patch" "$EXE" init --out "$T/x.safetensors" --image-size 30 --patch 4
expect_fail "unknown residual form" "postnorm" "$EXE" init --out "$T/x.safetensors" --residual postnorm
expect_fail "unknown aggregation" "max" "$EXE" init --out "$T/x.safetensors" --aggregate max
expect_fail "bad boolean" "maybe" "$EXE" init --out "$T/x.safetensors" --qkv-bias maybe
expect_fail "unknown preset" "nope" "$EXE" init --out "$T/x.safetensors" --preset nope
expect_fail "dropout out of range" "dropout" "$EXE" init --out "$T/x.safetensors" --dropout 1.5
expect_fail "std not positive" "std" "$EXE" init --out "$T/x.safetensors" --std 0
no_file "failed init leaves no file" "$T/x.safetensors"
expect_fail "init without --out" "--out" "$EXE" init
expect_fail "predict without --model" "--model" "$EXE" predict --input "$X" --output "$T/y.npy"
expect_fail "predict without --input" "--input" "$EXE" predict --model "$M" --output "$T/y.npy"
expect_fail "predict without --output" "--output" "$EXE" predict --model "$M" --input "$X"
expect_fail "--branches beyond the model" "branches" "$EXE" predict --model "$M" --input "$X" --output "$T/y.npy" --branches 3
expect_fail "--batch 0" "batch" "$EXE" predict --model "$M" --input "$X" --output "$T/y.npy" --batch 0
expect_fail "output of unknown type" "$T/y.txt" "$EXE" predict --model "$M" --input "$X" --output "$T/y.txt"
no_file "failed predict leaves no output" "$T/y.npy"

# --- bad files -------------------------------------------------------------
expect_fail "init into a missing directory" "$T/nodir/m.safetensors" "$EXE" init --out "$T/nodir/m.safetensors" "${SMALL[@]}"
expect_fail "model file missing" "$T/missing.safetensors" \
    "$EXE" predict --model "$T/missing.safetensors" --input "$X" --output "$T/y.npy"
expect_fail "model file empty" "$T/empty.safetensors" \
    "$EXE" predict --model "$T/empty.safetensors" --input "$X" --output "$T/y.npy"
expect_fail "model file truncated (data)" "$T/trunc.safetensors" \
    "$EXE" predict --model "$T/trunc.safetensors" --input "$X" --output "$T/y.npy"
expect_fail "model file truncated (header)" "$T/trunc_header.safetensors" \
    "$EXE" predict --model "$T/trunc_header.safetensors" --input "$X" --output "$T/y.npy"
expect_fail "model file of garbage" "$T/garbage.safetensors" \
    "$EXE" predict --model "$T/garbage.safetensors" --input "$X" --output "$T/y.npy"
expect_fail "model is a .npy file" "$X" "$EXE" predict --model "$X" --input "$X" --output "$T/y.npy"
expect_fail "model without a config" "$T/no_config.safetensors" "$EXE" info --model "$T/no_config.safetensors"
expect_fail "config of 16x16 layers, no tensors" "$T/cfg_big.safetensors" "$EXE" info --model "$T/cfg_big.safetensors"
expect_fail "config with heads not dividing dim" "$T/cfg_heads.safetensors" "$EXE" info --model "$T/cfg_heads.safetensors"
expect_fail "info on a garbage model" "$T/garbage.safetensors" "$EXE" info --model "$T/garbage.safetensors"
expect_fail "input file missing" "$T/missing.npy" "$EXE" predict --model "$M" --input "$T/missing.npy" --output "$T/y.npy"
expect_fail "input .npy truncated (header)" "$T/trunc_header.npy" \
    "$EXE" predict --model "$M" --input "$T/trunc_header.npy" --output "$T/y.npy"
expect_fail "input .npy truncated (data)" "$T/trunc_data.npy" \
    "$EXE" predict --model "$M" --input "$T/trunc_data.npy" --output "$T/y.npy"
expect_fail "input .npy of garbage" "$T/garbage.npy" "$EXE" predict --model "$M" --input "$T/garbage.npy" --output "$T/y.npy"
expect_fail "input is a directory" "$T/adir.npy" "$EXE" predict --model "$M" --input "$T/adir.npy" --output "$T/y.npy"
expect_fail "input float64 (wrong dtype)" "$FIX/torch_logits.npy" \
    "$EXE" predict --model "$M" --input "$FIX/torch_logits.npy" --output "$T/y.npy"
expect_fail "input of the wrong image size (16 for an 8x8 model)" "$X" \
    "$EXE" predict --model "$M8" --input "$X" --output "$T/y.npy"
expect_fail "image file of garbage" "$T/garbage.png" "$EXE" predict --model "$M" --input "$T/garbage.png" --output "$T/y.npy"
expect_fail "image that is not what its name says" "$T/wrong_ext.bmp" \
    "$EXE" predict --model "$M" --input "$T/wrong_ext.bmp" --output "$T/y.npy"
expect_fail "input of unknown type" "$FIX/README.md" "$EXE" predict --model "$M" --input "$FIX/README.md" --output "$T/y.npy"
expect_fail "output into a missing directory" "$T/nodir/y.npy" \
    "$EXE" predict --model "$M" --input "$X" --output "$T/nodir/y.npy"
no_file "failed predict leaves no output" "$T/y.npy"

# --- output paths: checked before any work -------------------------------------
# Every output's folder must exist and take a file, before anything is read
# (a missing model or data folder would otherwise be the error), and no
# output may be the same file as an input (by inode, not by name).
expect_fail "predict checks --output before reading the model" "$T/nodir/y.npy: cannot write there" \
    "$EXE" predict --model "$T/missing.safetensors" --input "$X" --output "$T/nodir/y.npy"
expect_fail "init --out under a file, not a folder" "$M is not a folder" "$EXE" init --out "$M/m.safetensors" "${SMALL[@]}"
expect_fail "predict --output that is a folder" "$T/adir.npy: is a folder" \
    "$EXE" predict --model "$M" --input "$X" --output "$T/adir.npy"
if [ "$(id -u)" != 0 ]; then AS_USER=(); elif command -v setpriv >/dev/null; then
    AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups); chmod 711 "$T"
else AS_USER=(none); fi
if [ "${AS_USER[*]}" = none ]; then echo "# root without setpriv: the unwritable-folder checks are skipped"
else
    mkdir -p "$T/ro" && chmod 555 "$T/ro"
    expect_fail "predict --output into a folder that takes no file" "$T/ro/y.npy|Permission denied" \
        "${AS_USER[@]}" "$EXE" predict --model "$M" --input "$X" --output "$T/ro/y.npy"
    if grep -qF "Permission denied" "$T/err"; then ok "the refusal says why"; else bad "no reason: $(first_line "$T/err")"; fi
    no_file "the unwritable folder holds no output" "$T/ro/y.npy"
fi
cp "$X" "$T/in.npy"
ln "$T/in.npy" "$T/in_link.npy"
expect_fail "predict --output onto its --input" "same file as --input" \
    "$EXE" predict --model "$M" --input "$T/in.npy" --output "$T/in.npy"
expect_fail "predict --output onto a hard link of its --input" "same file as --input" \
    "$EXE" predict --model "$M" --input "$T/in.npy" --output "$T/in_link.npy"
if cmp -s "$T/in.npy" "$X"; then ok "the refused predicts left the input alone"; else bad "predict overwrote its input"; fi
expect_ok "predict --output next to its input (another file) is fine" \
    "$EXE" predict --model "$M" --input "$T/in.npy" --output "$T/in_y.npy"
tmps=$(ls "$T"/*.tmp "$T"/adir.npy.* 2>/dev/null | tr '\n' ' ')
if [ -z "$tmps" ]; then ok "the output checks leave no temporary behind"; else bad "temporaries left: $tmps"; fi

# --- good invocations ------------------------------------------------------
expect_ok "--help" "$EXE" --help
if grep -q init "$T/out" && grep -q predict "$T/out"; then ok "--help lists init and predict"; else bad "--help does not list init and predict"; fi
expect_ok "--version" "$EXE" --version
expect_ok "init --help" "$EXE" init --help
expect_ok "predict --help" "$EXE" predict --help
expect_ok "info on a valid model" "$EXE" info --model "$M"
expect_ok "predict float32 NCHW .npy" "$EXE" predict --model "$M" --input "$X" --output "$T/y.npy"
if [ -s "$T/y.npy" ]; then ok "predict wrote $T/y.npy"; else bad "predict wrote no $T/y.npy"; fi
expect_ok "predict uint8 NHWC .npy to CSV on stdout" "$EXE" predict --model "$FIXM" --input "$XU8" --output - --top 2
if [ "$(wc -l <"$T/out")" -ge 6 ]; then ok "CSV has a header and 5 rows"; else bad "CSV: $(wc -l <"$T/out") lines"; fi

# --- plot ------------------------------------------------------------------
# tests/data/train_log.jsonl: a staged run of 3 branches (3 stages, a crash
# that leaves a half-written line 27, a resume, a sweep of 3 values).
LOG=tests/data/train_log.jsonl

# well_formed LABEL SVG: parses as XML (python3), else at least opens and closes <svg>
well_formed() {
    if [ -x /usr/bin/python3 ]; then
        if /usr/bin/python3 -c 'import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])' "$2" 2>"$T/xml_err"
        then ok "$1"; else bad "$1: $(tail -n 1 "$T/xml_err" | cut -c1-200)"; fi
    elif grep -q '<svg' "$2" && grep -q '</svg>' "$2"; then
        ok "$1 (<svg> ... </svg> only: no /usr/bin/python3)"
    else
        bad "$1: no <svg> ... </svg> in $2"
    fi
}

# has LABEL FILE STRING...: FILE contains every STRING (fixed strings)
has() {
    local label=$1 file=$2 s
    shift 2
    for s in "$@"; do
        if ! grep -qF -- "$s" "$file"; then bad "$label: no '$s' in $file"; return; fi
    done
    ok "$label"
}

expect_ok "plot a staged log with a resume and a half-written line" "$EXE" plot --log "$LOG" --out "$T/plot.svg"
has "plot warns about the half-written line, naming file and line" "$T/err" "$LOG:27"
well_formed "plot wrote a well-formed SVG" "$T/plot.svg"
has "plot SVG has a viewBox" "$T/plot.svg" 'viewBox="0 0 1000 '
if grep -q -e 'href' -e '<script' -e '@import' -e '<image' "$T/plot.svg"; then
    bad "plot SVG refers to something outside itself"; else ok "plot SVG is self-contained"; fi
has "plot marks the three stages" "$T/plot.svg" "stage 1 (1 branch)" "stage 2 (2 branches)" "stage 3 (3 branches)"
has "plot labels the sweep values" "$T/plot.svg" ">84.1%<" ">87.4%<" ">88.7%<"
no_file "plot leaves no temporary" "$T/plot.svg.tmp"

# a joint run (no stages, no sweep) named with markup characters, a NaN line
# (not JSON: skipped) and an infinite loss (skipped)
printf '%s\n' '{"event":"start","schedule":"joint","branches":3,"name":"joint <3x2> & \"co\""}' \
    '{"event":"train","step":100,"loss":1.9,"acc":0.31}' '{"event":"train","step":200,"loss":NaN,"acc":0.4}' \
    '{"event":"train","step":300,"loss":1e999,"acc":0.5}' \
    '{"event":"eval","step":400,"split":"val","loss":1.1,"accuracy":0.6}' '{"event":"novel","step":5}' \
    >"$T/joint.jsonl"
expect_ok "plot two logs overlaid" "$EXE" plot --log "$LOG" --log "$T/joint.jsonl" --out "$T/two.svg" --title 'a & b'
has "plot warns about the NaN line" "$T/err" "$T/joint.jsonl:3"
well_formed "overlay SVG is well-formed (names with <, &, quotes)" "$T/two.svg"
has "overlay legend names both runs" "$T/two.svg" ">pf3x2 staged<" ">joint &lt;3x2&gt; &amp; &quot;co&quot;<"
has "overlay notes the run without a sweep" "$T/two.svg" "1 run without a sweep yet"
# the same --log used by two runs: the second replaces the first in the plot
cat "$T/joint.jsonl" "$LOG" >"$T/rerun.jsonl"
expect_ok "plot a log holding two runs" "$EXE" plot --log "$T/rerun.jsonl" --out "$T/rerun.svg"
has "plot says the log holds two runs and draws the last" "$T/err" "holds 2 runs" "plotting the last"
has "the rerun's plot is the last run's (its stages and sweep)" "$T/rerun.svg" ">pf3x2 staged<" "stage 3 (3 branches)" ">88.7%<"
if grep -q "joint &lt;3x2&gt;" "$T/rerun.svg"; then bad "the rerun's plot still names the first run"
else ok "the rerun's plot names only the last run"; fi
printf '{"event":"train","step":0,"loss":2.3,"acc":0.1}\n' >"$T/one.jsonl"
expect_ok "plot a log of one point" "$EXE" plot --log "$T/one.jsonl" --out "$T/one.svg" --width 400
well_formed "one-point SVG is well-formed" "$T/one.svg"
has "one-point SVG says there is no sweep yet" "$T/one.svg" "no sweep yet"
expect_ok "plot --help" "$EXE" plot --help
has "plot --help shows the options and defaults" "$T/out" "--log FILE" "--out FILE" "--title TEXT" "default: 1000"

: >"$T/empty.jsonl"
tail -c +101 "$FIX/torch_logits.npy" >"$T/garbage.jsonl"
{ printf '{"event":"start","name":"'; head -c 1100000 /dev/zero | tr '\0' a; printf '"}\n'; } >"$T/long.jsonl"
expect_fail "plot without --log" "--log" "$EXE" plot --out "$T/x.svg"
expect_fail "plot without --out" "--out" "$EXE" plot --log "$LOG"
expect_fail "plot --width out of range" "--width" "$EXE" plot --log "$LOG" --out "$T/x.svg" --width 10
expect_fail "plot --out onto its --log" "--out" "$EXE" plot --log "$T/one.jsonl" --out "$T/one.jsonl"
expect_fail "plot of a missing log" "$T/missing.jsonl" "$EXE" plot --log "$T/missing.jsonl" --out "$T/x.svg"
expect_fail "plot of an empty log" "$T/empty.jsonl" "$EXE" plot --log "$T/empty.jsonl" --out "$T/x.svg"
expect_fail "plot of a log of garbage" "$T/garbage.jsonl: no log events" "$EXE" plot --log "$T/garbage.jsonl" --out "$T/x.svg"
expect_fail "plot of a log with a 1.1 MB line" "$T/long.jsonl:1" "$EXE" plot --log "$T/long.jsonl" --out "$T/x.svg"
expect_fail "plot of a directory" "$T/adir.npy" "$EXE" plot --log "$T/adir.npy" --out "$T/x.svg"
expect_fail "plot of a good and an empty log" "$T/empty.jsonl" \
    "$EXE" plot --log "$LOG" --log "$T/empty.jsonl" --out "$T/x.svg"
expect_fail "plot into a missing directory" "$T/nodir/x.svg" "$EXE" plot --log "$LOG" --out "$T/nodir/x.svg"
expect_fail "plot checks --out before reading the logs" "$T/nodir/x.svg: cannot write there" \
    "$EXE" plot --log "$T/missing.jsonl" --out "$T/nodir/x.svg"
expect_fail "plot --out onto its --log by another name" "is also a --log" \
    "$EXE" plot --log "$T/one.jsonl" --out "$T/./one.jsonl"
no_file "failed plots leave no SVG" "$T/x.svg"
if cmp -s "$T/one.jsonl" <(printf '{"event":"train","step":0,"loss":2.3,"acc":0.1}\n'); then
    ok "plot --out onto its --log left the log alone"; else bad "plot --out onto its --log changed the log"; fi

# --- train, eval, compress, expand --------------------------------------------
# A tiny model on the shipped sample: the flags, the files, and a run killed
# with SIGTERM and resumed, byte-identical to a run never interrupted.
S=data/fmnist-sample
TINY=(--patch 7 --dim 16 --heads 2 --mlp-dim 32 --branches 3 --depth 1 --batch 50 --epochs 2 --patience 0 --seed 3 --quiet)
expect_fail "train without --data" "--data" "$EXE" train --out "$T/t.safetensors"
expect_fail "train without --out" "--out" "$EXE" train --data "fmnist:$S"
expect_fail "train --schedule bogus" "bogus" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --schedule bogus
expect_fail "train --epochs 0" "--epochs" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --epochs 0
expect_fail "train --lr -1" "--lr" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --lr -1
expect_fail "train --epochs list with a non-integer" "each value must be an integer" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --epochs 2,1.5
expect_fail "train --epochs list without staged" "needs --schedule staged" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --schedule joint --epochs 2,3
expect_fail "train --freeze-old with a bad value" "freeze-old" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --freeze-old maybe
expect_fail "train --warmup beyond the epochs" "warmup" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --epochs 2 --warmup 5
expect_fail "train --randaug with one number" "--randaug" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --randaug 2
expect_fail "train --erase 1.5" "--erase: 1.5 is out of range" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --erase 1.5
expect_fail "train --erase -0.1" "--erase" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --erase -0.1
expect_fail "train --erase nan" "--erase: 'nan' is not a number" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --erase nan
expect_fail "train --val 1.5" "--val" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --val 1.5
expect_fail "train --resume with --init" "--init" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --resume "$M" --init "$M"
expect_fail "train --init with architecture flags" "architecture" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --init "$M" --dim 8
expect_fail "train --train-head without --train-branches" "--train-head" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --train-head 3
expect_fail "train on a missing data folder" "$T/nodata" "$EXE" train --data "fmnist:$T/nodata" --out "$T/t.safetensors"
expect_fail "train on an unknown data kind" "mnist2" "$EXE" train --data "mnist2:$S" --out "$T/t.safetensors"
expect_fail "train with a model of too few classes" "label" "$EXE" train --data "fmnist:$S#limit=200" --classes 4 --out "$T/t.safetensors" "${TINY[@]}"
expect_fail "train --resume from a model without training state" "train_state" "$EXE" train --data "fmnist:$S#limit=200" --out "$T/t.safetensors" --resume "$M"
# the outputs are checked before the data is read: with a missing data
# folder the error must still be the output's (a run would otherwise train a
# whole stage first and then fail to save it)
expect_fail "train --out into a missing folder, before reading the data" "$T/nodir/m.safetensors: cannot write there" \
    "$EXE" train --data "fmnist:$T/nodata" --out "$T/nodir/m.safetensors"
expect_fail "train --log into a missing folder, before reading the data" "$T/nodir/l.jsonl: cannot write there" \
    "$EXE" train --data "fmnist:$T/nodata" --out "$T/t.safetensors" --log "$T/nodir/l.jsonl"
expect_fail "train --out that is a folder" "$T/adir.npy: is a folder" \
    "$EXE" train --data "fmnist:$T/nodata" --out "$T/adir.npy"
expect_fail "train --log onto its --out (neither there yet)" "--log $T/./t.safetensors is the same file as --out" \
    "$EXE" train --data "fmnist:$T/nodata" --out "$T/t.safetensors" --log "$T/./t.safetensors"
expect_fail "train --out onto its --init, even with --overwrite" "same file as --init" \
    "$EXE" train --data "fmnist:$T/nodata" --init "$M" --out "$T/./model.safetensors" --overwrite
if [ "${AS_USER[*]}" != none ]; then
    : >"$T/ro.jsonl" && chmod 444 "$T/ro.jsonl"
    mkdir -p "$T/rw" && chmod 777 "$T/rw"
    expect_fail "train --log onto a log that cannot be appended to" "$T/ro.jsonl: cannot append to it" \
        "${AS_USER[@]}" "$EXE" train --data "fmnist:$T/nodata" --out "$T/rw/t.safetensors" --log "$T/ro.jsonl"
    no_file "the output check left nothing in the writable folder" "$T/rw/t.safetensors"
    expect_fail "train --out into a folder that takes no file" "$T/ro/t.safetensors: cannot create a file in $T/ro" \
        "${AS_USER[@]}" "$EXE" train --data "fmnist:$T/nodata" --out "$T/ro/t.safetensors"
fi
expect_ok "train --help" "$EXE" train --help
has "train --help offers --overwrite and says an existing --out is refused" "$T/out" "--overwrite" \
    "An existing file at --out is refused"
has "train --help offers --erase" "$T/out" "--erase P" "random erasing with probability P"
expect_ok "train --erase 0.5" "$EXE" train --data "fmnist:$S#limit=200" --val 0 --test none --patch 7 --dim 16 --heads 2 \
    --mlp-dim 32 --branches 1 --depth 1 --batch 50 --epochs 1 --seed 3 --quiet --erase 0.5 \
    --out "$T/erase.safetensors" --log "$T/erase.jsonl"
has "train --erase 0.5: the checkpoint's training options hold it" "$T/erase.safetensors" 'randaug_m\":0,\"erase_p\":0.5,'
has "train --erase 0.5: the log's start event holds it" "$T/erase.jsonl" '"precision":"fp32","erase_p":0.5,'
expect_fail "train --mixup -1" "--mixup" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --mixup -1
expect_fail "train --cutmix nan" "--cutmix: 'nan' is not a number" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --cutmix nan
expect_fail "train --ema 1" "--ema: 1 is out of range" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" --ema 1
expect_fail "train --drop-path 1" "--drop-path: 1 is out of range" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" \
    --drop-path 1
expect_fail "train --lr-schedule cosine-stage" "--lr-schedule" "$EXE" train --data "fmnist:$S" --out "$T/t.safetensors" \
    --lr-schedule cosine-stage
expect_ok "train --mixup 0.8 --cutmix 1 --ema 0.99 --drop-path 0.2 --lr-schedule cosine-run" "$EXE" train \
    --data "fmnist:$S#limit=200" --val 0.25 --test none --patch 7 --dim 16 --heads 2 --mlp-dim 32 --branches 2 --depth 1 \
    --batch 50 --epochs 1 --seed 3 --quiet --mixup 0.8 --cutmix 1 --ema 0.99 --drop-path 0.2 --lr-schedule cosine-run \
    --out "$T/mix.safetensors"
has "train --mixup/--cutmix/--ema/--drop-path: the checkpoint's training options hold them" "$T/mix.safetensors" \
    '\"lr_schedule\":\"cosine-run\"' '\"mixup\":0.8' '\"cutmix\":1' '\"ema\":0.99' '\"drop_path\":0.2' 'train.ema'
no_file "failed trains leave no checkpoint" "$T/t.safetensors"

D="fmnist:$S#limit=1100"
expect_ok "train staged on 1000 + 100 images" "$EXE" train --data "$D" --test "fmnist:$S@test#limit=300" "${TINY[@]}" \
    --out "$T/full.safetensors" --log "$T/full.jsonl"
has "train prints the branch sweep and the test accuracy" "$T/out" "branch sweep" "test accuracy"
# an existing --out may be another run's finished model: refused before the
# data is read unless --resume names it or --overwrite is given
cp "$T/full.safetensors" "$T/full_before.safetensors"
expect_fail "train --out onto an existing model, before reading the data" "exists: pass --overwrite" \
    "$EXE" train --data "fmnist:$T/nodata" --out "$T/full.safetensors"
has "the refusal also offers --resume" "$T/err" "or --resume $T/full.safetensors"
expect_fail "train --out onto an existing model with the same data" "--overwrite" \
    "$EXE" train --data "$D" --test none "${TINY[@]}" --out "$T/full.safetensors"
if cmp -s "$T/full.safetensors" "$T/full_before.safetensors"; then ok "the refused trains left the existing model alone"
else bad "a refused train changed the existing model"; fi
no_file "the refused trains left no temporary" "$T/full.safetensors.tmp"
cp "$T/full.safetensors" "$T/ow.safetensors"
expect_ok "train --overwrite replaces an existing model" "$EXE" train --data "fmnist:$S#limit=200" --test none \
    --patch 7 --dim 16 --heads 2 --mlp-dim 32 --branches 1 --depth 1 --batch 50 --epochs 1 --quiet \
    --out "$T/ow.safetensors" --overwrite
expect_ok "info on the overwritten model" "$EXE" info --model "$T/ow.safetensors" --json
has "the overwritten model is the new run's (1 branch, not 3)" "$T/out" '"branches": 1,'
expect_ok "eval --sweep --json" "$EXE" eval --model "$T/full.safetensors" --data "fmnist:$S#limit=300" --sweep --json
if /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert 0<=d["accuracy"]<=1 and len(d["sweep"])==3 and len(d["per_class"])==10 and d["n"]==300 and d["sweep"][2]==d["accuracy"]' "$T/out" 2>/dev/null; then
    ok "eval --json: accuracy, 3 sweep values (the last = accuracy), 10 per-class values, n = 300"
elif [ ! -x /usr/bin/python3 ]; then ok "eval --json (python3 not there to parse it)"
else bad "eval --json is not the docs/design.md §4 object: $(head -c 300 "$T/out")"; fi
expect_ok "eval --branches 2" "$EXE" eval --model "$T/full.safetensors" --data "fmnist:$S#limit=300" --branches 2 --json
acc2=$(sed -n 's/.*"accuracy": \([0-9.e-]*\).*/\1/p' "$T/out")
expect_ok "compress --keep 2" "$EXE" compress --model "$T/full.safetensors" --keep 2 --out "$T/c2.safetensors"
has "compress reports the size ratio" "$T/out" "x smaller"
expect_ok "eval the compressed model" "$EXE" eval --model "$T/c2.safetensors" --data "fmnist:$S#limit=300" --json
c2=$(sed -n 's/.*"accuracy": \([0-9.e-]*\).*/\1/p' "$T/out")
if [ -n "$acc2" ] && [ "$acc2" = "$c2" ]; then ok "the compressed model scores what the prefix k = 2 scores ($c2)"
else bad "compressed $c2 vs prefix $acc2"; fi
expect_ok "info on the compressed model" "$EXE" info --model "$T/c2.safetensors"
has "info shows the size ratio of each prefix" "$T/out" "keep 1 of 2"
expect_fail "compress --keep 4 of 3" "--keep" "$EXE" compress --model "$T/full.safetensors" --keep 4 --out "$T/c4.safetensors"
no_file "a failed compress leaves nothing" "$T/c4.safetensors"
expect_fail "compress checks --out before reading the model" "$T/nodir/c.safetensors: cannot write there" \
    "$EXE" compress --model "$T/missing.safetensors" --keep 1 --out "$T/nodir/c.safetensors"
expect_fail "compress without --keep" "--keep" "$EXE" compress --model "$T/full.safetensors" --out "$T/c4.safetensors"
expect_fail "compress --out onto its --model (another name)" "same file as --model" \
    "$EXE" compress --model "$T/full.safetensors" --keep 1 --out "$T/./full.safetensors"
if cmp -s "$T/full.safetensors" "$T/full_before.safetensors"; then ok "the refused compress left the model alone"
else bad "compress overwrote its --model"; fi
# only_branch4_changed BEFORE AFTER: the two checkpoints differ in branch 4
# (branches.3.*) and the head rows from 10 on, and nowhere else
only_branch4_changed() {
    /usr/bin/python3 - "$1" "$2" <<'PY' 2>/dev/null
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert all(a[k] == b[k] for k in a if not k.startswith('branches.3.') and k not in ('head.weight', 'head.bias'))
assert any(a[k] != b[k] for k in a if k.startswith('branches.3.'))
assert a['head.weight'][:10 * 16 * 4] == b['head.weight'][:10 * 16 * 4]
PY
}
expect_ok "expand --add 1 --classes 12" "$EXE" expand --model "$T/full.safetensors" --add 1 --classes 12 --out "$T/e.safetensors"
has "expand prints the fine-tuning command" "$T/out" "--train-branches 4-4" "--train-head 10"
expect_fail "expand to fewer classes" "--classes" "$EXE" expand --model "$T/full.safetensors" --classes 5 --out "$T/e2.safetensors"
expect_fail "expand with nothing to add" "expand: nothing to add" \
    "$EXE" expand --model "$T/full.safetensors" --out "$T/e2.safetensors"
if grep -qF "expand: expand:" "$T/err"; then bad "expand's message names the command twice: $(first_line "$T/err")"
else ok "expand's message names the command once"; fi
no_file "the failed expands leave nothing" "$T/e2.safetensors"
expect_fail "expand checks --out before reading the model" "$T/nodir/e.safetensors: cannot write there" \
    "$EXE" expand --model "$T/missing.safetensors" --add 1 --out "$T/nodir/e.safetensors"
ln "$T/full.safetensors" "$T/full_link.safetensors"
expect_fail "expand --out onto its --model (a hard link)" "same file as --model" \
    "$EXE" expand --model "$T/full.safetensors" --add 1 --out "$T/full_link.safetensors"
if cmp -s "$T/full.safetensors" "$T/full_before.safetensors"; then ok "the refused expand left the model alone"
else bad "expand overwrote its --model"; fi
expect_ok "train --init the expanded model, only the new branch" "$EXE" train --init "$T/e.safetensors" --data "$D" \
    --train-branches 4 --train-head 10 --epochs 1 --batch 50 --quiet --test none --out "$T/e_tuned.safetensors"
if only_branch4_changed "$T/e.safetensors" "$T/e_tuned.safetensors"; then ok "--train-branches 4 --train-head 10: only branch 4 and head rows 10.. changed"
else bad "--train-branches changed more (or less) than branch 4 and the new head rows"; fi

# --- data of another shape or more classes: refused unless --resize ---------------
# eval, predict (uint8 arrays, image files) and train --init refuse images of
# another size or channel count than the model's, naming both shapes (exit
# 1), unless --resize; data of more classes than the model's is refused
# whatever the flags, fewer are fine. float32 input must always match.
# exit_is N LABEL CMD...: the command exits with status N
exit_is() {
    local want=$1 label=$2 rc
    shift 2
    rc=$("$@" >/dev/null 2>&1 </dev/null; echo $?)
    if [ "$rc" -eq "$want" ]; then ok "$label exits $want"; else bad "$label: exit $rc, not $want"; fi
}
# npy_u8 PATH SHAPE: a uint8 .npy v1.0 of SHAPE (a Python tuple) holding stdin's bytes
npy_u8() {
    local h="{'descr': '|u1', 'fortran_order': False, 'shape': $2, }" pad n
    pad=$(( (64 - (10 + ${#h} + 1) % 64) % 64 ))
    h+=$(printf '%*s' "$pad" '')
    n=$(( ${#h} + 1 ))
    { printf '\x93NUMPY\x01\x00'; printf "\\$(printf %03o $((n & 255)))\\$(printf %03o $((n >> 8)))"
      printf '%s\n' "$h"; cat; } >"$1"
}
fm_bytes() { gzip -dc "$S/t10k-images-idx3-ubyte.gz" | tail -c +17 | head -c "$1"; } # Fashion-MNIST pixels
M10="$T/model10.safetensors" # 16x16x3 like $M, 10 classes
expect_ok "init a 16x16x3 model of 10 classes" "$EXE" init --out "$M10" "${SMALL[@]}" --classes 10 --seed 5
E100="fmnist:$S#limit=100"
expect_fail "eval a 16x16x3 model on 28x28x1 data, naming both shapes" \
    "eval: $M10 takes 16x16x3 images; fmnist:$S@test#limit=100 has 28x28x1: pass --resize to resize and convert them" \
    "$EXE" eval --model "$M10" --data "$E100"
exit_is 1 "eval on data of another shape" "$EXE" eval --model "$M10" --data "$E100"
expect_ok "eval --resize on data of another shape" "$EXE" eval --model "$M10" --data "$E100" --resize --json
has "eval --resize scores all 100 images" "$T/out" '"n": 100,'
expect_fail "eval a 4-class model on 10-class data, even with --resize" "$M has 4 classes; fmnist:$S@test#limit=100 has 10" \
    "$EXE" eval --model "$M" --data "$E100" --resize
has "the refusal says how to keep the model's classes" "$T/err" "#classes=0-3"
expect_fail "eval a 4-class model on #classes=2-5 (labels up to 5)" "has labels up to 5" \
    "$EXE" eval --model "$M" --data "fmnist:$S#classes=2-5" --resize
expect_ok "eval a 4-class model on #classes=0-3 (a subset of its classes)" "$EXE" eval --model "$M" \
    --data "fmnist:$S#classes=0-3#limit=100" --resize --json
expect_ok "eval a 10-class model on 5 of its classes" "$EXE" eval --model "$T/full.safetensors" \
    --data "fmnist:$S#classes=0-4#limit=100" --json
expect_ok "eval --help" "$EXE" eval --help
if grep -qE -- '--resize .*\(default: off\)' "$T/out"; then ok "eval --help shows --resize (default: off)"
else bad "eval --help does not show --resize with its default"; fi

fm_bytes $((3 * 28 * 28)) | npy_u8 "$T/g28.npy" "(3, 28, 28)"         # uint8 [3,28,28]: gray 28x28
fm_bytes $((2 * 20 * 24 * 4)) | npy_u8 "$T/rgba.npy" "(2, 20, 24, 4)" # uint8 [2,20,24,4]: RGBA 20x24
fm_bytes $((2 * 20 * 24 * 7)) | npy_u8 "$T/c7.npy" "(2, 20, 24, 7)"   # 7 channels: no image
expect_fail "predict a uint8 .npy of another shape, naming both" \
    "predict: $M takes 16x16x3 images; $T/g28.npy has 28x28x1 (uint8 [3,28,28]): pass --resize" \
    "$EXE" predict --model "$M" --input "$T/g28.npy" --output "$T/yr.csv"
exit_is 1 "predict on a uint8 .npy of another shape" "$EXE" predict --model "$M" --input "$T/g28.npy" --output "$T/yr.csv"
no_file "the refused predict leaves no output" "$T/yr.csv"
expect_ok "predict --resize a uint8 [N,H,W] .npy of another size and channels" "$EXE" predict --model "$M" \
    --input "$T/g28.npy" --output - --resize
if [ "$(grep -c . "$T/out")" = 4 ]; then ok "predict --resize: a header and 3 rows"; else bad "predict --resize: $(grep -c . "$T/out") lines"; fi
expect_ok "predict --resize a uint8 RGBA .npy of another size" "$EXE" predict --model "$M" --input "$T/rgba.npy" \
    --output - --resize --top 1
expect_fail "predict --resize a uint8 .npy of 7 channels" "expected uint8" \
    "$EXE" predict --model "$M" --input "$T/c7.npy" --output - --resize
expect_fail "predict --resize leaves float32 input alone (16x16 for an 8x8 model)" "--resize does not apply" \
    "$EXE" predict --model "$M8" --input "$X" --output "$T/yr.npy" --resize
expect_ok "predict --help" "$EXE" predict --help
if grep -qE -- '--resize .*\(default: off\)' "$T/out"; then ok "predict --help shows --resize (default: off)"
else bad "predict --help does not show --resize with its default"; fi

if [ -x /usr/bin/python3 ]; then
    # BMPs written by hand: a 16x16 24-bit one (the model's shape) and two
    # 28x28 8-bit gray ones
    /usr/bin/python3 - "$T/ok16.bmp" "$T/odd28.bmp" "$T/odd28b.bmp" <<'PY'
import struct, sys
def bmp(path, w, h, bpp, px, pal=b''):
    off = 14 + 40 + len(pal)
    open(path, 'wb').write(b'BM' + struct.pack('<IHHI', off + len(px), 0, 0, off) +
        struct.pack('<IiiHHIIiiII', 40, w, h, 1, bpp, 0, len(px), 2835, 2835, len(pal) // 4, 0) + pal + px)
bmp(sys.argv[1], 16, 16, 24, bytes((x * 16 + y * 7 + c * 50) % 256 for y in range(16) for x in range(16) for c in range(3)))
gray = b''.join(struct.pack('<BBBB', i, i, i, 0) for i in range(256))
for p in sys.argv[2:4]:
    bmp(p, 28, 28, 8, bytes(255 if 11 <= x < 17 else 0 for _ in range(28) for x in range(28)), gray)
PY
    if "$EXE" predict --model "$M" --input "$T/ok16.bmp" --output - 2>&1 >/dev/null | grep -q "needs stb_image"; then
        echo "# $EXE was built without stb_image: the image-file checks of --resize are skipped"
    else
        expect_ok "predict an image of the model's shape without --resize" "$EXE" predict --model "$M" \
            --input "$T/ok16.bmp" --output -
        expect_fail "predict on images of another size, naming the first and counting the others" \
            "predict: $M takes 16x16x3 images; $T/odd28.bmp has 28x28x" \
            "$EXE" predict --model "$M" --input "$T/ok16.bmp,$T/odd28.bmp" --input "$T/odd28b.bmp" --output "$T/yi.csv"
        has "the refusal counts the other odd image" "$T/err" "(and 1 more of the 3 images differ)"
        exit_is 1 "predict on images of another size" "$EXE" predict --model "$M" --input "$T/odd28.bmp" --output "$T/yi.csv"
        no_file "the refused image predict leaves no output" "$T/yi.csv"
        expect_ok "predict --resize on images of two sizes" "$EXE" predict --model "$M" \
            --input "$T/ok16.bmp,$T/odd28.bmp" --input "$T/odd28b.bmp" --output "$T/yi.csv" --resize
        if [ "$(grep -c . "$T/yi.csv")" = 4 ]; then ok "predict --resize on images: a header and 3 rows"
        else bad "predict --resize on images: $(grep -c . "$T/yi.csv") lines"; fi
    fi
fi

expect_fail "train --init on data of another shape" "train: $M10 takes 16x16x3 images" \
    "$EXE" train --init "$M10" --data "fmnist:$S#limit=200" --epochs 1 --batch 50 --quiet --out "$T/tr.safetensors"
has "the refusal names the data's shape" "$T/err" "has 28x28x1: pass --resize"
exit_is 1 "train --init on data of another shape" "$EXE" train --init "$M10" --data "fmnist:$S#limit=200" --epochs 1 \
    --batch 50 --quiet --out "$T/tr.safetensors"
no_file "the refused train --init leaves no checkpoint" "$T/tr.safetensors"
printf '\000\001' | npy_u8 "$T/rgba_y.npy" "(2,)"
expect_fail "train --init on a --test of another shape" "has 20x24x4 (--test)" "$EXE" train --init "$T/full.safetensors" \
    --data "fmnist:$S#limit=200" --test "npy:$T/rgba.npy,$T/rgba_y.npy" --epochs 1 --quiet --out "$T/tr.safetensors"
expect_fail "train --init of a 4-class model on 10-class data, even with --resize" "$M has 4 classes" \
    "$EXE" train --init "$M" --data "fmnist:$S#limit=200" --resize --epochs 1 --quiet --out "$T/tr.safetensors"
expect_ok "train --init --resize on data of another shape" "$EXE" train --init "$M10" --data "fmnist:$S#limit=200" \
    --test "fmnist:$S@test#limit=100" --resize --epochs 1 --batch 50 --quiet --out "$T/tr.safetensors"
has "train --init --resize reports the test accuracy" "$T/out" "test accuracy"
expect_fail "train --resize without --init" "--resize goes with --init" \
    "$EXE" train --data "fmnist:$S#limit=200" --resize --out "$T/tr2.safetensors"
exit_is 2 "train --resize without --init (a usage error)" "$EXE" train --data "fmnist:$S#limit=200" --resize \
    --out "$T/tr2.safetensors"
expect_ok "train --help" "$EXE" train --help
if grep -qE -- '--resize .*\(default: off\)' "$T/out"; then ok "train --help shows --resize (default: off)"
else bad "train --help does not show --resize with its default"; fi

# SIGTERM in the middle, then --resume: the same bytes as the uninterrupted run.
# The log already holds an earlier run (the same --log used again): the
# resume cuts back only the interrupted run's own lines.
cp "$T/full.jsonl" "$T/part.jsonl"
"$EXE" train --data "$D" --test none "${TINY[@]}" --out "$T/part.safetensors" --log "$T/part.jsonl" >/dev/null 2>"$T/err" &
pid=$!
for _ in $(seq 1 3000); do [ -f "$T/part.safetensors" ] && break; sleep 0.01; done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
if [ "$rc" -eq 130 ] && grep -q -- "--resume" "$T/err"; then ok "SIGTERM stops training with exit 130 and says how to resume"
elif [ "$rc" -eq 0 ]; then ok "SIGTERM came after the run had finished (a fast machine): resume below still checks"
else bad "SIGTERM: exit $rc: $(first_line "$T/err")"; fi
expect_ok "train --resume the interrupted run" "$EXE" train --data "$D" --test none "${TINY[@]}" \
    --out "$T/part.safetensors" --log "$T/part.jsonl" --resume "$T/part.safetensors"
expect_ok "the same run uninterrupted" "$EXE" train --data "$D" --test none "${TINY[@]}" \
    --out "$T/whole.safetensors" --log "$T/whole.jsonl"
if cmp -s "$T/part.safetensors" "$T/whole.safetensors"; then ok "resumed checkpoint is byte-identical to the uninterrupted one"
else bad "resumed and uninterrupted checkpoints differ"; fi
if [ "$(grep -c . "$T/part.jsonl")" = "$(( $(grep -c . "$T/full.jsonl") + $(grep -c . "$T/whole.jsonl") ))" ]; then
    ok "the resumed log holds the earlier run and as many lines of its own as the uninterrupted one"
else bad "logs: $(grep -c . "$T/part.jsonl") lines vs $(grep -c . "$T/full.jsonl") earlier + $(grep -c . "$T/whole.jsonl")"; fi
if cmp -s <(head -n "$(grep -c . "$T/full.jsonl")" "$T/part.jsonl") "$T/full.jsonl"; then
    ok "the earlier run's lines are kept as they were"
else bad "the resume changed the earlier run's lines of the log"; fi
if diff <(tail -n "$(grep -c . "$T/whole.jsonl")" "$T/part.jsonl" | sed -E 's/"(time|time_s|img_s)":[^,}]*//g') \
        <(sed -E 's/"(time|time_s|img_s)":[^,}]*//g' "$T/whole.jsonl") >/dev/null; then
    ok "the resumed run's lines are the uninterrupted run's but for timings"
else bad "the resumed run's log lines differ from the uninterrupted run's beyond timings"; fi
expect_fail "resume with another model width, naming the field" '"dim" is 8 now, 16 in the checkpoint' "$EXE" train \
    --data "$D" --test none "${TINY[@]}" --dim 8 --out "$T/part.safetensors" --resume "$T/part.safetensors"
expect_fail "resume on other data (one image fewer)" "trained on other data" "$EXE" train --data "fmnist:$S#limit=1099" --test none \
    "${TINY[@]}" --out "$T/part.safetensors" --resume "$T/part.safetensors"
expect_fail "resume with another learning rate" "lr" "$EXE" train --data "$D" --test none "${TINY[@]}" --lr 0.5 \
    --out "$T/part.safetensors" --resume "$T/part.safetensors"
expect_fail "train --resume A --out B, B another existing model" "is not the --resume file: pass --overwrite" \
    "$EXE" train --data "fmnist:$T/nodata" --out "$T/full.safetensors" --resume "$T/part.safetensors"
if cmp -s "$T/full.safetensors" "$T/full_before.safetensors"; then ok "the refused resume left the other model alone"
else bad "a refused resume changed the existing model at --out"; fi

# tools/run_fmnist.sh (make run) twice into the same folder: the second run
# replaces the first (--overwrite); with --resume it continues the model and
# its log. A tiny model on 300 images (the extra flags override the preset).
RUNF=(--data "fmnist:$S#limit=300" --patch 7 --dim 16 --heads 2 --mlp-dim 32 --branches 2 --depth 1 --batch 50 --quiet)
RUNENV=(env -u PARAFORMER_DATA RUN_DIR="$T/run" RUN_EPOCHS=1 PARAFORMER_EXE="$EXE")
expect_ok "tools/run_fmnist.sh (make run), a tiny model" "${RUNENV[@]}" tools/run_fmnist.sh "${RUNF[@]}"
expect_ok "tools/run_fmnist.sh again into the same folder" "${RUNENV[@]}" tools/run_fmnist.sh "${RUNF[@]}"
has "the second run wrote the model, log and plot" "$T/out" "wrote $T/run/model.safetensors, $T/run/train.jsonl"
expect_ok "tools/run_fmnist.sh --resume the finished run" "${RUNENV[@]}" tools/run_fmnist.sh "${RUNF[@]}" \
    --resume "$T/run/model.safetensors"
has "the resumed run kept the run's log (not removed as a new run's)" "$T/run/train.jsonl" '{"event":"start"'
expect_ok "plot the training log" "$EXE" plot --log "$T/full.jsonl" --out "$T/full.svg"
has "the plot marks the stages" "$T/full.svg" "stage 2" "stage 3"

# --- checkpoint writes cut short ----------------------------------------------
# A write killed (SIGKILL at any moment) or stopped by a full disk (ulimit -f)
# leaves at most a stale NAME.tmp: the checkpoint at NAME is the old one or
# the new one, whole, every time, and the next run reuses the temporary.
CK="$T/cut.safetensors"
"$EXE" train --data "$D" --test none "${TINY[@]}" --out "$CK" >/dev/null 2>&1
cut_ok=1 cut_killed=0
for i in $(seq 1 20); do
    "$EXE" train --data "$D" --test none "${TINY[@]}" --seed "$i" --overwrite --out "$CK" >/dev/null 2>&1 &
    pid=$!
    sleep "0.$(printf %03d $(( (i * 7919) % 300 )))"  # 0 to 0.3 s: a run takes about 0.3 s here
    kill -KILL "$pid" 2>/dev/null && cut_killed=$((cut_killed + 1))
    wait "$pid" 2>/dev/null
    if ! "$EXE" info --model "$CK" >/dev/null 2>"$T/err"; then cut_ok=0; break; fi
done
if [ "$cut_ok" = 1 ]; then ok "20 runs killed at spread moments ($cut_killed while running): the checkpoint loads every time"
else bad "after kill $i the checkpoint does not load: $(first_line "$T/err")"; fi
size=$(wc -c <"$CK")
{ ( ulimit -f $(( size / 1024 / 2 )); exec "$EXE" train --data "$D" --test none "${TINY[@]}" --seed 99 --overwrite \
    --out "$CK" ) >/dev/null 2>&1; } 2>/dev/null
rc=$?
if [ "$rc" -ne 0 ] && "$EXE" info --model "$CK" >/dev/null 2>&1; then
    ok "a write stopped by a full disk (ulimit -f, exit $rc) leaves the old checkpoint whole"
else bad "ulimit -f: exit $rc, or the old checkpoint no longer loads"; fi
expect_ok "the next run after a cut write succeeds (a stale .tmp is reused)" "$EXE" train --data "$D" --test none \
    "${TINY[@]}" --overwrite --out "$CK"
no_file "and leaves no temporary behind" "$CK.tmp"

# --- --device: the GPU backend ------------------------------------------------
# The program without the backend refuses --device cuda (exit 1, saying how to
# get one). $PARAFORMER_EMU (make test: build/paraformer_emu) is the program
# linked with paraformer_cuda.cu compiled for the CPU (the GPU primitives
# emulated, 8 devices): its --device cuda must give the CPU build's logits,
# accuracy and sweep, and a killed and resumed run the bytes of a whole one.
expect_fail "--device with a bad value" "--device" "$EXE" predict --model "$M" --input "$X" --output "$T/yd.npy" --device gpu
if "$EXE" --version | grep -q "GPU backend"; then
    echo "# $EXE has a GPU backend: the checks of a build without one are skipped"
else
    for cmd in "predict --model $M --input $X --output $T/yd.npy" "eval --model $M --data fmnist:$S --resize" \
               "train --data fmnist:$T/nodata --out $T/t.safetensors"; do
        # shellcheck disable=SC2086 # the words of $cmd
        expect_fail "${cmd%% *} --device cuda without a backend (before reading anything)" \
            "this build has no GPU backend: make cuda builds build/cuda/paraformer" "$EXE" $cmd --device cuda:1
        rc=$("$EXE" $cmd --device cuda:1 >/dev/null 2>&1 </dev/null; echo $?)
        if [ "$rc" -eq 1 ]; then ok "${cmd%% *} --device cuda without a backend exits 1"
        else bad "${cmd%% *} --device cuda without a backend: exit $rc, not 1"; fi
    done
    no_file "--device cuda without a backend leaves no output" "$T/yd.npy"
fi

# max_rel A.csv B.csv: max |a - b| / max |a| over the numbers of two CSVs of
# the same shape (header line skipped)
max_rel() {
    paste -d, "$1" "$2" | awk -F, 'NR > 1 { h = NF / 2; for (i = 1; i <= h; i++) {
        d = $i - $(i + h); if (d < 0) d = -d; a = $i; if (a < 0) a = -a;
        if (d > md) md = d; if (a > ma) ma = a } } END { if (NR > 1) printf "%.3g\n", (ma > 0 ? md / ma : md) }'
}
# within V LIMIT: V is a number <= LIMIT
within() { [ -n "$1" ] && awk -v v="$1" -v l="$2" 'BEGIN { exit !(v + 0 <= l + 0) }'; }

# --bf16 on the CPU: where the CPU has AVX512_BF16 (/proc/cpuinfo's flag,
# read independently of the program's own CPUID check) the logits are
# within bf16's bounds of fp32's and not equal to them; elsewhere it is
# refused, naming the instruction set
"$EXE" predict --model "$M" --input "$X" --output "$T/cpu32.csv" >/dev/null 2>&1
if grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null; then
    expect_ok "predict --bf16 on the CPU (AVX512_BF16)" "$EXE" predict --model "$M" --input "$X" --output "$T/bf.csv" --bf16
    has "predict --bf16 says it ran in bf16" "$T/out" "on cpu (bf16)"
    r=$(max_rel "$T/cpu32.csv" "$T/bf.csv")
    if [ -s "$T/bf.csv" ] && within "$r" 3e-2 && ! within "$r" 0; then ok "predict --bf16: logits within 3e-2 of fp32's, not equal: $r"
    else bad "predict --bf16: logits differ from fp32's by $r (relative; want (0, 3e-2])"; fi
    expect_ok "eval --bf16 on the CPU" "$EXE" eval --model "$T/full.safetensors" --data "fmnist:$S#limit=300" --bf16
    has "eval --bf16 says it ran in bf16" "$T/out" "on cpu (bf16)"
    expect_ok "bench --bf16 --json on the CPU (a tiny model)" "$EXE" bench --zoo pf2x2 --dataset fmnist --dim 16 \
        --heads 2 --batch 8 --infer-batch 8 --warm 0 --reps 1 --profile-steps 1 --bf16 --json
    has "bench --bf16 names the precision" "$T/out" '"device": "cpu", "backend": "cpu", "precision": "bf16"'
else
    expect_fail "--bf16 on a CPU without AVX512_BF16" "AVX512_BF16" "$EXE" predict --model "$M" --input "$X" \
        --output "$T/yd.npy" --bf16
    no_file "--bf16 refused leaves no output" "$T/yd.npy"
fi

EMU="${PARAFORMER_EMU:-}"
if [ -z "$EMU" ]; then
    echo "# PARAFORMER_EMU not set: the emulated GPU backend is not tested (make test sets it)"
elif [ ! -x "$EMU" ]; then
    bad "PARAFORMER_EMU=$EMU: not found or not executable (make $EMU)"
else
    expect_ok "$EMU --version names the backend" "$EMU" --version
    has "the emulated build says so" "$T/out" "GPU backend: emulated"
    # predict: fp32 within 1e-4 relative of the CPU (other summation orders);
    # in chunks of 2, on the first branch only, over two devices (one branch each)
    "$EXE" predict --model "$M" --input "$X" --output "$T/cpu.csv" >/dev/null 2>&1
    "$EXE" predict --model "$M" --input "$X" --output "$T/cpu_k1.csv" --branches 1 >/dev/null 2>&1
    for v in "cuda" "cuda --batch 2" "cuda:0,1" "cuda:3 --branches 1" "cuda --bf16"; do
        ref="$T/cpu.csv" tol=1e-4 why="fp32"
        case $v in *--branches*) ref="$T/cpu_k1.csv" ;; esac
        # bf16 rounds every GEMM operand to 8 significant bits (relative 2^-8
        # each), accumulated in fp32: a few 1e-3 on logits of this size
        case $v in *--bf16*) tol=3e-2 why="bf16" ;; esac
        rm -f "$T/dev.csv"
        # shellcheck disable=SC2086 # the words of $v
        expect_ok "predict --device $v (emulated)" "$EMU" predict --model "$M" --input "$X" --output "$T/dev.csv" --device $v
        has "predict --device $v says where it ran" "$T/out" "on ${v%% *} (emulated backend"
        r=$(max_rel "$ref" "$T/dev.csv")
        if [ -s "$T/dev.csv" ] && within "$r" "$tol"; then ok "predict --device $v: logits within $tol of the CPU's ($why): $r"
        else bad "predict --device $v: logits differ from the CPU's by $r (relative; limit $tol)"; fi
    done
    expect_fail "predict --device cuda:99 (the emulation has 8)" "CUDA device 99 does not exist" \
        "$EMU" predict --model "$M" --input "$X" --output "$T/yd.npy" --device cuda:99
    expect_fail "eval --device cuda:99" "CUDA device 99 does not exist" "$EMU" eval --model "$M" --data "fmnist:$S" --resize --device cuda:99
    expect_fail "--device cuda:0,1,2 for a model of 2 branches" "2 branches" \
        "$EMU" predict --model "$M" --input "$X" --output "$T/yd.npy" --device cuda:0,1,2
    expect_fail "--device cuda:x" "--device" "$EMU" predict --model "$M" --input "$X" --output "$T/yd.npy" --device cuda:x
    no_file "failed device runs leave no output" "$T/yd.npy"

    # bench --device cuda: the CPU bench's keys, timed on the backend
    expect_ok "bench --device cuda --bf16 --json (emulated, a tiny model)" "$EMU" bench --zoo pf2x2 --dataset fmnist \
        --dim 16 --heads 2 --batch 8 --infer-batch 8 --warm 0 --reps 1 --device cuda --bf16 --json
    has "bench --device cuda names the device and precision" "$T/out" '"device": "cuda", "backend": "emulated", "precision": "bf16"'
    if /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert all(d[k] > 0 for k in ("train_img_s", "infer_img_s", "latency_b1_ms", "train_host_img_s", "infer_host_img_s")) and d["params"] > 0' "$T/out" 2>/dev/null; then
        ok "bench --device cuda --json: one object with train_img_s, infer_img_s, latency_b1_ms (and the _host figures)"
    elif [ ! -x /usr/bin/python3 ]; then ok "bench --device cuda --json: not parsed (no /usr/bin/python3)"
    else bad "bench --device cuda --json: $(head -c 200 "$T/out")"; fi
    expect_fail "bench --peak --device cuda" "--peak measures the CPU" "$EMU" bench --peak --device cuda
    if [ -x /usr/bin/python3 ]; then
        expect_ok "tools/gpu_bench.py --no-torch on the emulated backend" /usr/bin/python3 tools/gpu_bench.py \
            --exe "$EMU" --no-torch --models vit1,pf2x1 --batch 2 --infer-batch 2 --warm 0 --reps 1 --json "$T/gb.json"
        has "gpu_bench.py prints a table per model, fp32 and bf16, resident and from the host" "$T/out" \
            "pf2x1 (batch 2, inference batch 2)" "| ParaFormer-C bf16 |" "| ParaFormer-C fp32, images from the host |"
        if /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ours"]["pf2x1/bf16"]["precision"] == "bf16" and d["ours"]["vit1/fp32"]["train_img_s"] > 0 and d["failed"] == {}' "$T/gb.json"; then
            ok "gpu_bench.py --json: every run of ours under model/precision"
        else bad "gpu_bench.py --json: $(head -c 300 "$T/gb.json")"; fi
        # a failing PyTorch side, and one past --timeout: ours are kept
        printf 'import sys\nsys.exit("torch anchor: no CUDA here")\n' >"$T/anchor_fail.py"
        printf 'import time\ntime.sleep(30)\n' >"$T/anchor_slow.py"
        expect_fail "gpu_bench.py with a failing PyTorch side: exit 1" "gpu_bench: failed: torch eager pf2x1 (exit 1: torch anchor: no CUDA here)" \
            /usr/bin/python3 tools/gpu_bench.py --exe "$EMU" --models pf2x1 --batch 2 --infer-batch 2 --warm 0 --reps 1 \
            --torch-ref "$T/anchor_fail.py" --json "$T/gbf.json"
        expect_fail "gpu_bench.py with a PyTorch side past --timeout: exit 1" "ran past --timeout 3 s" \
            /usr/bin/python3 tools/gpu_bench.py --exe "$EMU" --models pf2x1 --batch 2 --infer-batch 2 --warm 0 --reps 1 \
            --torch-ref "$T/anchor_slow.py" --timeout 3 --json "$T/gbs.json"
        if /usr/bin/python3 -c 'import json,sys; ds=[json.load(open(f)) for f in sys.argv[1:]]; assert all(d["ours"]["pf2x1/bf16"]["train_img_s"] > 0 and "torch eager pf2x1" in d["failed"] for d in ds)' "$T/gbf.json" "$T/gbs.json"; then
            ok "gpu_bench.py --json keeps our runs and names the failed PyTorch side"
        else bad "gpu_bench.py --json after a failed PyTorch side: $(head -c 300 "$T/gbf.json")"; fi
        # tools/gpu_check.sh's budget: a step that cannot start is skipped and
        # said so; a command past its limit fails, and the run ends in time
        GPU_CHECK_STEPS=program GPU_CHECK_EXE="$EMU" GPU_CHECK_BUDGET_S=5 GPU_CHECK_LOG="$T/gc_skip.log" \
            bash tools/gpu_check.sh "$T/gc" >/dev/null 2>&1
        rc=$?
        if [ "$rc" = 0 ] && grep -q 'note - skipped (the program on the GPU): past GPU_CHECK_BUDGET_S=5' "$T/gc_skip.log" &&
            grep -q '0 failure(s), 1 step(s) skipped (see the notes)' "$T/gc_skip.log"; then
            ok "gpu_check.sh with a 5 s budget skips the program's checks, says so in GPU_CHECK_LOG, exit 0"
        else bad "gpu_check.sh with a 5 s budget: exit $rc: $(tail -3 "$T/gc_skip.log" 2>/dev/null)"; fi
        # (the CPU side a stand-in that answers at once, so that the budget
        # goes to the hanging GPU program whatever the build's speed)
        printf '#!/bin/sh\nexec sleep 100\n' >"$T/hang.sh"
        printf '#!/bin/sh\necho "{}"\n' >"$T/cpu_now.sh"
        chmod +x "$T/hang.sh" "$T/cpu_now.sh"
        s0=$(date +%s)
        GPU_CHECK_STEPS=program GPU_CHECK_EXE="$T/hang.sh" GPU_CHECK_CPU_EXE="$T/cpu_now.sh" GPU_CHECK_BUDGET_S=14 \
            GPU_CHECK_LOG="$T/gc_hang.log" bash tools/gpu_check.sh "$T/gc" >/dev/null 2>&1
        rc=$? el=$(( $(date +%s) - s0 ))
        if [ "$rc" != 0 ] && [ "$el" -le 24 ] && grep -q '^FAIL - eval --device cuda ran past its limit' "$T/gc_hang.log"; then
            ok "gpu_check.sh with a hanging GPU program: the commands fail at the budget (14 s), the run ends in $el s, exit $rc"
        else bad "gpu_check.sh with a hanging GPU program: exit $rc after $el s: $(grep -m2 '^FAIL' "$T/gc_hang.log" 2>/dev/null)"; fi
        # gpu_bench.py with a PyTorch side that answers: eager, then compile
        # per model, merged; the ratios against torch.compile bf16; a budget
        # too small for the PyTorch side skips it, keeping ours
        cat >"$T/anchor_ok.py" <<'EOF'
import json, sys
m = sys.argv[sys.argv.index("--models") + 1]
print(json.dumps({"torch": "stand-in", "gpu": "stand-in GPU"}))
if "--compile-only" in sys.argv:
    print(json.dumps({"model": m, "train_img_s[bf16+compile]": 3.0, "infer_img_s[bf16+compile]": 4.0, "latency_b1_ms[bf16+compile]": 0.5}))
else:
    print(json.dumps({"model": m, "train_img_s[fp32]": 1.0, "infer_img_s[fp32]": 2.0, "latency_b1_ms[fp32]": 1.0}))
EOF
        expect_ok "gpu_bench.py with a PyTorch side: eager and compile per model" /usr/bin/python3 tools/gpu_bench.py \
            --exe "$EMU" --models pf2x1 --batch 2 --infer-batch 2 --warm 0 --reps 1 --torch-ref "$T/anchor_ok.py" \
            --json "$T/gbo.json"
        if /usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
t, o, r = d["torch"]["pf2x1"], d["ours"], d["ratios"]["pf2x1"]
assert t["train_img_s[fp32]"] == 1.0 and t["infer_img_s[bf16+compile]"] == 4.0, t
best_infer = max(o["pf2x1/fp32"]["infer_img_s"], o["pf2x1/bf16"]["infer_img_s"])
assert abs(r["infer_vs_torch_compile_bf16"] - best_infer / 4.0) < 1e-9 * best_infer, r
assert abs(r["train_bf16_vs_torch_best"] - o["pf2x1/bf16"]["train_img_s"] / 3.0) < 1e-9 * o["pf2x1/bf16"]["train_img_s"], r
assert d["failed"] == {} and d["skipped"] == {} and d["gpu"] == "stand-in GPU", d' "$T/gbo.json"; then
            ok "gpu_bench.py --json: both PyTorch runs merged per model; ratios against its best and torch.compile bf16"
        else bad "gpu_bench.py --json with a PyTorch side: $(head -c 400 "$T/gbo.json")"; fi
        expect_fail "gpu_bench.py --budget 1: the runs are skipped, exit 1" \
            "gpu_bench: skipped: torch compile pf2x1 (past --budget 1 s)" \
            /usr/bin/python3 tools/gpu_bench.py --exe "$EMU" --models pf2x1 --batch 2 --infer-batch 2 --warm 0 --reps 1 \
            --torch-ref "$T/anchor_ok.py" --budget 1 --json "$T/gbb.json"
        # tools/gpu_session.sh's order and budget, on the CPU: a stand-in
        # test_cuda whose "rows" group fails unless PF_CUDA_ROW_FUSED=0, no
        # compute-sanitizer, the emulated program and bench, a 40 s budget
        cat >"$T/tc_standin.sh" <<'EOF'
#!/bin/sh
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ] && [ -z "$CUDA_VISIBLE_DEVICES" ]; then echo "no CUDA device found"; exit 77; fi
echo "backend: stand-in; groups: $*"
echo "# parity: every variant"
echo "ok   - parity"
echo "# rows: the fused rows"
if [ "${PF_CUDA_ROW_FUSED:-}" = 0 ]; then echo "ok   - rows"; echo "2 passed, 0 failed"; exit 0; fi
echo "FAIL - rows: logits differ"; echo "1 passed, 1 failed"; exit 1
EOF
        chmod +x "$T/tc_standin.sh"
        s0=$(date +%s)
        OUT= BUDGET_S=40 GPU_SESSION_WORK="$T/gsw" GPU_CHECK_NO_BUILD=1 GPU_CHECK_TEST_EXE="$T/tc_standin.sh" GPU_CHECK_EXE="$EMU" \
            GPU_CHECK_CPU_EXE="$EXE" GPU_CHECK_SANITIZER=no-such-sanitizer GPU_BENCH_ARGS="--exe $EMU --no-torch --models pf2x1 --batch 2 --infer-batch 2 --warm 0 --reps 1" \
            bash tools/gpu_session.sh "$T/gs" >/dev/null 2>&1
        rc=$? el=$(( $(date +%s) - s0 ))
        if [ "$rc" = 1 ] && [ "$el" -le 43 ] &&
            grep -q '^note - isolated: test_cuda passes with PF_CUDA_ROW_FUSED=0$' "$T/gs/gpu_check.log" &&
            grep -q 'test_cuda passes only with PF_CUDA_ROW_FUSED=0: the later steps run with it' "$T/gs/session.txt" &&
            grep -q 'note - skipped (sanitizers): no-such-sanitizer not found' "$T/gs/session.txt" &&
            grep -q 'done (budget 40 s), exit 1' "$T/gs/session.txt" && [ "$(ls "$T/gs" | wc -l)" -le 8 ] &&
            /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ours"]["pf2x1/bf16"]["train_img_s"] > 0' "$T/gs/gpu_bench.json"; then
            ok "gpu_session.sh with a 40 s budget: test_cuda fails, PF_CUDA_ROW_FUSED=0 isolates it, the bench runs with it, done in $el s, exit 1"
        else bad "gpu_session.sh with a 40 s budget: exit $rc after $el s: $(tail -5 "$T/gs/session.txt" 2>/dev/null)"; fi
        expect_ok "tools/latency_model.py --run on the emulated backend" /usr/bin/python3 tools/latency_model.py --run \
            --exe "$EMU" --model pf2x1 --gpus 1,2 --batch 2 --warm 0 --reps 1
        has "latency_model.py says it is a model and prints its table" "$T/out" "A MODEL, not a measurement" \
            "| 2 | 2 | 1 |"
        # the model's arithmetic, from saved times: NCCL's cost model with
        # alpha 2 and 10 us, beta 370 GB/s, on 1, 2 and 4 GPUs
        cat >"$T/lm_times.json" <<'EOF'
{"times": {
 "vit1": {"latency_b1_ms": 0.3, "batch_ms": 2.0, "tokens": 65, "dim": 192, "batch": 256, "precision": "bf16"},
 "vit2": {"latency_b1_ms": 0.4, "batch_ms": 3.0, "tokens": 65, "dim": 192, "batch": 256, "precision": "bf16"},
 "vit12": {"latency_b1_ms": 1.4, "batch_ms": 13.0, "tokens": 65, "dim": 192, "batch": 256, "precision": "bf16"},
 "pf4x3": {"latency_b1_ms": 0.6, "batch_ms": 13.5, "tokens": 65, "dim": 192, "batch": 256, "precision": "bf16"},
 "pf2x3": {"latency_b1_ms": 0.45, "batch_ms": 7.0, "tokens": 65, "dim": 192, "batch": 256, "precision": "bf16"},
 "pf1x3": {"latency_b1_ms": 0.4, "batch_ms": 4.0, "tokens": 65, "dim": 192, "batch": 256, "precision": "bf16"}}}
EOF
        expect_ok "tools/latency_model.py --from saved times" /usr/bin/python3 tools/latency_model.py --from "$T/lm_times.json" \
            --gpus 1,2,4 --json "$T/lm_out.json"
        if /usr/bin/python3 -c '
import json, sys
rows = {(r["batch"], r["gpus"]): r for r in json.load(open(sys.argv[1]))["model"]}
S = 256 * 65 * 192 * 2  # bytes of the batch-256 activation in bf16
for n, t in ((1, 13.5), (2, 7.0), (4, 4.0)):
    r = rows[(256, n)]
    for a, got in zip((2.0, 10.0), r["branch_per_gpu_ms"]):
        want = t + (0 if n == 1 else (a * 1e-3 + S / 370e6) + (a * 1e-3 + 2 * (n - 1) / n * S / 370e6))
        assert abs(got - want) < 1e-9, (n, a, got, want)
    assert abs(r["pipeline_ms"][1] - (13.0 + (n - 1) * (10e-3 + S / 370e6))) < 1e-9, r
assert rows[(1, 4)]["branches_ms"] == 0.4 and abs(rows[(1, 1)]["stem_head_ms"] - 0.2) < 1e-12' "$T/lm_out.json"; then
            ok "latency_model.py: broadcast alpha + S/beta, all-reduce alpha + 2(n-1)/n S/beta, pipeline hand-offs, per alpha"
        else bad "latency_model.py's model: $(head -c 300 "$T/lm_out.json")"; fi
        expect_fail "latency_model.py --alpha-us x refused" "--alpha-us must be one or two" \
            /usr/bin/python3 tools/latency_model.py --from "$T/lm_times.json" --alpha-us x
    fi

    # eval --sweep --json: the CPU's object, key for key; accuracy, per-class
    # accuracy and the sweep to within one image (a near-tie of two logits may
    # fall the other way under another summation order), the loss to 1e-4
    E300="fmnist:$S#limit=300"
    "$EXE" eval --model "$T/full.safetensors" --data "$E300" --sweep --json >"$T/eval_cpu.json" 2>/dev/null
    expect_ok "eval --device cuda --sweep --json (emulated, batches of 64)" \
        "$EMU" eval --model "$T/full.safetensors" --data "$E300" --sweep --json --device cuda --batch 64
    cp "$T/out" "$T/eval_dev.json"
    if [ ! -x /usr/bin/python3 ]; then ok "eval --device cuda --json (python3 not there to compare it)"
    elif /usr/bin/python3 - "$T/eval_cpu.json" "$T/eval_dev.json" <<'PY' 2>"$T/py_err"
import json, sys
a, b = (json.load(open(p), object_pairs_hook=lambda kv: kv) for p in sys.argv[1:3])
assert [k for k, _ in a] == [k for k, _ in b], "keys %s vs %s" % ([k for k, _ in a], [k for k, _ in b])
a, b = dict(a), dict(b)
n = a["n"]
assert b["n"] == n and b["branches"] == a["branches"] == 3 and len(b["sweep"]) == 3
for x, y in [(a["accuracy"], b["accuracy"])] + list(zip(a["sweep"], b["sweep"])) + \
        [(p, q) for p, q in zip(a["per_class"], b["per_class"]) if p is not None]:
    assert abs(x - y) <= 1.0 / n + 1e-6, (x, y)
assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a["loss"], b["loss"])
assert b["sweep"][2] == b["accuracy"]
PY
    then ok "eval --device cuda --sweep --json: the CPU's keys, accuracy, per-class, sweep and loss"
    else bad "eval --device cuda differs from the CPU: $(tail -n 1 "$T/py_err" | cut -c1-200)"; fi
    expect_ok "eval --device cuda:0,1,2 --branches 2 (text)" "$EMU" eval --model "$T/full.safetensors" --data "$E300" \
        --device cuda:0,1,2 --branches 2
    has "eval says where it ran" "$T/out" "on cuda:0,1,2 (emulated backend, fp32)"

    # train: a short staged run on the device, killed after its first
    # checkpoint and resumed, byte for byte the run left alone
    expect_ok "train --device cuda (emulated), test sweep" "$EMU" train --data "$D" --test "$E300" "${TINY[@]}" \
        --device cuda --out "$T/dev_whole.safetensors" --log "$T/dev_whole.jsonl"
    has "train --device cuda prints the branch sweep" "$T/out" "branch sweep" "test accuracy"
    has "the log's start event names the device" "$T/dev_whole.jsonl" '"device":"cuda","backend":"emulated","precision":"fp32"'
    "$EMU" train --data "$D" --test none "${TINY[@]}" --device cuda --out "$T/dev_part.safetensors" \
        --log "$T/dev_part.jsonl" >/dev/null 2>"$T/err" &
    pid=$!
    for _ in $(seq 1 3000); do [ -f "$T/dev_part.safetensors" ] && break; sleep 0.01; done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    if [ "$rc" -eq 130 ] && grep -q -- "--resume" "$T/err"; then ok "SIGTERM stops a --device cuda run with exit 130"
    elif [ "$rc" -eq 0 ]; then ok "SIGTERM came after the --device cuda run had finished: resume below still checks"
    else bad "SIGTERM of a --device cuda run: exit $rc: $(first_line "$T/err")"; fi
    expect_ok "train --device cuda --resume the interrupted run" "$EMU" train --data "$D" --test none "${TINY[@]}" \
        --device cuda --out "$T/dev_part.safetensors" --log "$T/dev_part.jsonl" --resume "$T/dev_part.safetensors"
    expect_ok "the same --device cuda run uninterrupted" "$EMU" train --data "$D" --test none "${TINY[@]}" \
        --device cuda --out "$T/dev_one.safetensors" --log "$T/dev_one.jsonl"
    if cmp -s "$T/dev_part.safetensors" "$T/dev_one.safetensors"; then
        ok "--device cuda: the resumed checkpoint is byte-identical to the uninterrupted one"
    else bad "--device cuda: resumed and uninterrupted checkpoints differ"; fi
    if [ "$(grep -c . "$T/dev_part.jsonl")" = "$(grep -c . "$T/dev_one.jsonl")" ]; then
        ok "--device cuda: the resumed log has as many lines as the uninterrupted one"
    else bad "--device cuda logs: $(grep -c . "$T/dev_part.jsonl") vs $(grep -c . "$T/dev_one.jsonl") lines"; fi
    # what the device trained is a plain checkpoint: the CPU scores it as the device does
    "$EXE" eval --model "$T/dev_one.safetensors" --data "$E300" --json >"$T/eval_cpu2.json" 2>/dev/null
    "$EMU" eval --model "$T/dev_one.safetensors" --data "$E300" --json --device cuda >"$T/eval_dev2.json" 2>/dev/null
    a1=$(sed -n 's/.*"accuracy": \([0-9.e-]*\).*/\1/p' "$T/eval_cpu2.json")
    a2=$(sed -n 's/.*"accuracy": \([0-9.e-]*\).*/\1/p' "$T/eval_dev2.json")
    if [ -n "$a1" ] && [ -n "$a2" ] && within "$(awk -v a="$a1" -v b="$a2" 'BEGIN { d = a - b; print d < 0 ? -d : d }')" 0.0034
    then ok "a model trained on the device scores the same on the CPU ($a1) and the device ($a2), within an image"
    else bad "a model trained on the device: CPU accuracy '$a1', device '$a2'"; fi
    # the flags of what trains (frozen branches and stem, head rows) reach the
    # device: the expanded model of above, its new branch on a second device
    expect_ok "train --device cuda:0,1 --init the expanded model, only the new branch" "$EMU" train \
        --init "$T/e.safetensors" --data "$D" --train-branches 4 --train-head 10 --epochs 1 --batch 50 --quiet \
        --test none --device cuda:0,1 --out "$T/e_dev.safetensors"
    if only_branch4_changed "$T/e.safetensors" "$T/e_dev.safetensors"; then ok "--device cuda:0,1 --train-branches 4 --train-head 10: only branch 4 and head rows 10.. changed"
    elif [ ! -x /usr/bin/python3 ]; then ok "--device cuda --train-branches (python3 not there to compare)"
    else bad "--device cuda --train-branches changed more (or less) than branch 4 and the new head rows"; fi
    expect_fail "train --device cuda:99" "CUDA device 99 does not exist" "$EMU" train --data "$D" "${TINY[@]}" \
        --device cuda:99 --out "$T/t99.safetensors"
    for f in "--mixup 0.8" "--cutmix 1" "--ema 0.99" "--drop-path 0.1"; do
        # shellcheck disable=SC2086 # the words of $f
        expect_fail "train --device cuda $f is refused" "runs on the CPU only" "$EMU" train --data "$D" "${TINY[@]}" \
            --device cuda $f --out "$T/tmix.safetensors"
    done
    no_file "a refused --device cuda --ema leaves no checkpoint" "$T/tmix.safetensors"
    no_file "train --device cuda:99 leaves no checkpoint" "$T/t99.safetensors"
fi

# --- tools/cuda_gate.sh: the spill and parameter gate of make cuda --------------
# (on hand-written ptxas -v and PTX excerpts: no nvcc needed)
cat >"$T/ptxas_ok.log" <<'EOF'
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for _Z3fooPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers
ptxas info    : Compiling entry function '_Z3barPf' for 'sm_90'
ptxas info    : Function properties for _Z3barPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers
EOF
awk '/_Z3barPf/ {b = 1} b && /spill/ {sub(/0 bytes spill stores, 0 bytes spill loads/, "24 bytes spill stores, 16 bytes spill loads")} {print}' \
    "$T/ptxas_ok.log" >"$T/ptxas_spill.log"
cat >"$T/k.ptx" <<'EOF'
.visible .entry _Z3fooPf(
	.param .u64 _Z3fooPf_param_0,
	.param .align 8 .b8 _Z3fooPf_param_1[3000]
)
{
	ret;
}
.visible .entry _Z3barPf(
	.param .align 8 .b8 _Z3barPf_param_0[5000],
	.param .u32 _Z3barPf_param_1
)
{
	ret;
}
EOF
expect_ok "cuda_gate.sh: no spills, parameters under 8 KB" sh tools/cuda_gate.sh "$T/ptxas_ok.log" "$T/k.ptx" 8192
has "cuda_gate.sh prints the counts" "$T/out" \
    "2 kernels (ptxas), 2 in the PTX; at most 96 registers; 0 bytes spilled; largest parameter block 5004 bytes (limit 8192)"
expect_fail "cuda_gate.sh: a kernel that spills fails, named" "_Z3barPf: 24 bytes spill stores, 16 bytes spill loads" \
    sh tools/cuda_gate.sh "$T/ptxas_spill.log" "$T/k.ptx" 8192
expect_fail "cuda_gate.sh: over 4 KB of parameters fails, named" "_Z3barPf: 5004 bytes of parameters" \
    sh tools/cuda_gate.sh "$T/ptxas_ok.log" "$T/k.ptx"
expect_fail "cuda_gate.sh: a log without kernels fails" "no kernels found" sh tools/cuda_gate.sh "$T/k.ptx" "$T/k.ptx"
expect_fail "cuda_gate.sh: a missing log" "cannot read it" sh tools/cuda_gate.sh "$T/nothing.log" "$T/k.ptx"

# --- the cifar10-small recipe, briefly, on a 512-image slice of CIFAR-10 ---------
C10=${PARAFORMER_CIFAR10_MINI:-../shared/data/mini/cifar-10-batches-bin}
if [ -f "$C10/data_batch_1.bin" ] && [ -f "$C10/test_batch.bin" ]; then
    expect_ok "train --preset cifar10-small, 2+2 epochs on $C10" "$EXE" train --preset cifar10-small \
        --data "cifar10:$C10" --epochs 2,2 --threads 2 --out "$T/c10.safetensors" --log "$T/c10.jsonl"
    has "the cifar10-small run prints the sweep of 2 branches" "$T/out" "branch sweep" "   2   1205898"
    if grep -q '"preset":"cifar10-small"' "$T/c10.jsonl" && grep -q '"params":1205898' "$T/c10.jsonl" &&
        grep -q '"erase_p":0.25' "$T/c10.jsonl" && [ "$(grep -c '"event":"stage"' "$T/c10.jsonl")" = 2 ] &&
        grep -q '"depth":3' "$T/c10.jsonl"; then
        ok "its log: the preset, PF(2x3), 1,205,898 parameters, erasing 0.25, 2 stages"
    else bad "the cifar10-small log lacks the preset, PF(2x3), parameter count, erasing or 2 stages"; fi
    l0=$(grep '"event":"train"' "$T/c10.jsonl" | head -n 1 | sed 's/.*"loss":\([0-9.e+-]*\).*/\1/')
    l1=$(grep '"event":"train"' "$T/c10.jsonl" | tail -n 1 | sed 's/.*"loss":\([0-9.e+-]*\).*/\1/')
    if [ -n "$l0" ] && [ -n "$l1" ] && awk -v a="$l0" -v b="$l1" 'BEGIN { exit !(b + 0 < a + 0) }'; then
        ok "the cifar10-small run learns: training loss $l0 -> $l1"
    else bad "the cifar10-small run: training loss '$l0' -> '$l1' did not fall"; fi
else
    echo "# no CIFAR-10 slice at $C10 (set PARAFORMER_CIFAR10_MINI): the cifar10-small run is skipped"
fi

# --- examples -------------------------------------------------------------------
EX=$(dirname "$EXE")/examples
for e in train_fmnist class_incremental classify; do
    if [ -x "$EX/$e" ]; then
        expect_ok "examples/$e --help" "$EX/$e" --help
        has "examples/$e --help shows its defaults" "$T/out" "default"
    elif [ "$e" != classify ]; then bad "examples/$e was not built"; fi
done
if [ -x "$EX/classify" ] && [ -x /usr/bin/python3 ]; then
    # a 28x28 8-bit gray BMP of a bright vertical bar, written by hand
    /usr/bin/python3 - "$T/bar.bmp" <<'PY'
import struct, sys
w = h = 28; row = (w + 3) & ~3
pal = b''.join(struct.pack('<BBBB', i, i, i, 0) for i in range(256))
px = b''.join(bytes(255 if 11 <= x < 17 else 0 for x in range(w)) + b'\0' * (row - w) for _ in range(h))
off = 14 + 40 + len(pal)
open(sys.argv[1], 'wb').write(b'BM' + struct.pack('<IHHI', off + len(px), 0, 0, off) +
    struct.pack('<IiiHHIIiiII', 40, w, h, 1, 8, 0, len(px), 2835, 2835, 256, 0) + pal + px)
PY
    expect_ok "examples/classify an image with the trained model" "$EX/classify" --model "$T/full.safetensors" --names fmnist --top 2 "$T/bar.bmp"
    has "classify prints two named classes with probabilities" "$T/out" "bar.bmp:" "%"
    expect_fail "examples/classify a missing image" "$T/none.png" "$EX/classify" --model "$T/full.safetensors" "$T/none.png"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

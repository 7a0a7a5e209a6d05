#!/usr/bin/env python3
"""bench_compare.py - ParaFormer-C against PyTorch and OpenBLAS, side by side.

    make bench-tools                      # builds build/paraformer and build/gemm_bench
    python3 tools/bench_compare.py        # full run (about 10 minutes on 2 cores)
    python3 tools/bench_compare.py --quick --json out.json

In one invocation, on this machine, it runs (docs/design.md §6):
  * build/gemm_bench: the FP32 FMA peak at each thread count, and pf_gemm
    against OpenBLAS cblas_sgemm on the GEMM shapes of the models;
  * build/paraformer bench --zoo X --threads T --json for the standard
    configurations vit12 (ViT 1x12), pf4x3 (PF(4x3): 4 branches of 3 layers;
    both 32x32x3, width 192) and pf2x3 (PF(2x3), 28x28x1, width 128, 4 heads),
    at 2 and at 1 thread;
  * tools/torch_ref.py --device cpu --threads T, the PyTorch reference model,
    on the same models (PyTorch from Debian's python3-torch, run with
    /usr/bin/python3; --python names another);
  * with --bf16 (the default where the CPU has AVX512_BF16): ours again with
    bench --bf16, and PyTorch with torch.autocast("cpu", dtype=bfloat16) in
    the same PyTorch run, in a table of their own.
Each measurement is repeated --rounds times, ours and PyTorch alternating
(which of the two goes first alternates too); the tables show the medians
over rounds (the FMA peak: the best round, it is a ceiling).

Both sides get the same batch, the same inference batch and the same warm-up
and repeat counts. OpenBLAS (gemm_bench, and PyTorch's BLAS) runs with its
best kernel: the CPU model of these machines is not known to Debian's
OpenBLAS 0.3.21, which then falls back to a slow generic kernel, so its
environment is `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
OPENBLAS_CORETYPE=SkylakeX`, plus OMP_WAIT_POLICY=PASSIVE for PyTorch (its
idle OpenMP threads must not spin on the cores OpenBLAS computes on) and
OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = T (torch.set_num_threads does not
limit OpenBLAS's own threads). Ours runs in the caller's environment.

Only the standard library is needed; PyTorch runs in a subprocess. Nothing is
built here. Exit status: 0, or 1 if a run failed or gemm_bench's checks failed.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (our flags, torch_ref.py flags); the standard configurations of docs/design.md §6.
# Names as everywhere here: pfBxL = B branches of L layers, vitN = 1 branch of N layers.
MODELS = {
    "vit12": (["--zoo", "vit12"], ["--models", "vit12"]),
    "pf4x3": (["--zoo", "pf4x3"], ["--models", "pf4x3"]),
    "pf2x3": (["--zoo", "pf2x3", "--dim", "128", "--heads", "4", "--dataset", "fmnist"],
              ["--models", "pf2x3", "--dim", "128", "--heads", "4", "--dataset", "fmnist"]),
}
DESC = {"vit12": "ViT 1x12, D192, 32x32x3", "pf4x3": "PF 4x3, D192, 32x32x3", "pf2x3": "PF 2x3, D128 h4, 28x28x1"}


def blas_env(threads=None, passive=False):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    env["OPENBLAS_CORETYPE"] = "SkylakeX"
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if threads:
        env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def env_prefix(env):
    """The `env ...` words that turn os.environ into env, for printing."""
    words = []
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in os.environ:
            words += ["-u", k]
    for k in sorted(env):
        if os.environ.get(k) != env[k]:
            words.append(f"{k}={env[k]}")
    return ["env"] + words if words else []


class Runner:
    def __init__(s, log):
        s.commands, s.log, s.failures = [], log, []

    def run(s, cmd, env=None, timeout=3600):
        shown = " ".join(shlex.quote(w) for w in env_prefix(env or os.environ) + cmd)
        if shown not in s.commands:
            s.commands.append(shown)
        s.log(f"$ {shown}")
        t0 = time.time()
        p = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout)
        s.log(f"  ({time.time() - t0:.0f} s, exit {p.returncode})")
        if p.returncode != 0:
            s.failures.append(f"{shown}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
        return p


def last_json(text, key=None):
    """The output as one JSON object, else its last line that is a JSON object
    (having `key`, if given); None if there is none."""
    try:
        o = json.loads(text)
        if isinstance(o, dict) and (key is None or key in o):
            return o
    except ValueError:
        pass
    found = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if key is None or key in o:
                found = o
    return found


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def machine():
    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, universal_newlines=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="repeats of every measurement (default 3)")
    p.add_argument("--threads", default="2,1", help="thread counts (default 2,1)")
    p.add_argument("--models", default="vit12,pf4x3,pf2x3", help="of " + ",".join(MODELS))
    p.add_argument("--batch", type=int, default=128, help="training batch, both sides (default 128)")
    p.add_argument("--infer-batch", type=int, default=0, help="inference batch, both sides (default = batch)")
    p.add_argument("--warm", type=int, default=2, help="warm-up repeats, both sides (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repeats per run, both sides (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, batch 16, warm 1, reps 1, gemm_bench --quick")
    p.add_argument("--json", metavar="OUT", help="save every run and the tables as JSON")
    p.add_argument("--exe", default="build/paraformer", help="our program (default build/paraformer)")
    p.add_argument("--gemm-bench", default="build/gemm_bench", help="(default build/gemm_bench)")
    p.add_argument("--torch-ref", default=os.path.relpath(os.path.join(HERE, "torch_ref.py"), ROOT),
                   help="the PyTorch side, relative to the repository root (default %(default)s)")
    p.add_argument("--python", default="/usr/bin/python3", help="the Python with PyTorch (default /usr/bin/python3, Debian's)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--no-gemm", action="store_true", help="skip gemm_bench (the peak then comes from ours)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 rows: ours with --bf16, PyTorch with bf16 autocast (auto: where /proc/cpuinfo has "
                        "avx512_bf16, which ours needs)")
    a = p.parse_args()
    if a.quick:
        a.rounds, a.batch, a.warm, a.reps = 1, 16 if a.batch == 128 else a.batch, 1, 1
    a.infer_batch = a.infer_batch or a.batch
    if a.bf16 == "auto":
        try:
            with open("/proc/cpuinfo") as f:
                a.bf16 = "on" if "avx512_bf16" in f.read().split() else "off"
        except OSError:
            a.bf16 = "off"
    bf16 = a.bf16 == "on"
    threads = [int(t) for t in a.threads.split(",")]
    models = a.models.split(",")
    for m in models:
        if m not in MODELS:
            p.error(f"--models: unknown model {m!r} (known: {', '.join(MODELS)})")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    # paths as given, relative to the repository root (the commands run there)
    exe, gemm, ref = a.exe, a.gemm_bench, a.torch_ref
    if a.json:
        a.json = os.path.abspath(a.json)
    os.chdir(ROOT)
    if not os.access(exe, os.X_OK):
        sys.exit(f"error: {a.exe} not found: run `make bench-tools` first")
    if not a.no_gemm and not os.access(gemm, os.X_OK):
        log(f"note: {a.gemm_bench} not found (needs libopenblas-dev; `make bench-tools`): no GEMM comparison")
        a.no_gemm = True
    if not a.no_torch and not os.path.exists(ref):
        log(f"note: {ref} not found: no PyTorch comparison")
        a.no_torch = True
    if not a.no_torch and subprocess.run([a.python, "-c", "import torch"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL).returncode != 0:
        log(f"note: {a.python} cannot import torch (Debian: apt-get install python3-torch "
            f"libopenblas0-pthread): no PyTorch comparison")
        a.no_torch = True

    R = Runner(log)
    started = datetime.datetime.now().astimezone()
    info = {"machine": machine(), "date": started.isoformat(timespec="seconds"), "rounds": a.rounds,
            "batch": a.batch, "infer_batch": a.infer_batch, "warm": a.warm, "reps": a.reps, "threads": threads,
            "models": models}
    common = ["--batch", str(a.batch), "--warm", str(a.warm), "--reps", str(a.reps)]
    ours = {(m, t): [] for m in models for t in threads}
    ours_bf = {(m, t): [] for m in models for t in threads}
    torch_ = {(m, t): [] for m in models for t in threads}
    gemm_runs, torch_info = [], None
    tl = ",".join(str(t) for t in sorted(set(threads)))

    for rnd in range(a.rounds):
        log(f"== round {rnd + 1} of {a.rounds}")
        if not a.no_gemm:
            cmd = [gemm, "--threads", tl, "--json"] + (["--quick"] if a.quick else
                                                        ["--batch", str(a.batch), "--reps", "5", "--warm", "2"]) + (
                ["--bf16"] if bf16 else [])
            pr = R.run(cmd, env=blas_env())
            o = last_json(pr.stdout, "shapes")
            if o is not None:
                gemm_runs.append(o)
                if o.get("failed"):
                    R.failures.append(f"gemm_bench: {o['failed']} checks failed (results differ)")
            else:
                R.failures.append(f"gemm_bench printed no JSON: {pr.stdout[-300:]!r}")
        for t in threads:
            for m in models:
                ours_cmd = [exe, "bench"] + MODELS[m][0] + common + [
                    "--infer-batch", str(a.infer_batch), "--threads", str(t), "--json"] + (
                    ["--peak"] if a.no_gemm else [])
                torch_cmd = [a.python, ref, "--device", "cpu", "--threads", str(t)] + MODELS[m][1] + common + [
                    "--infer-batch", str(a.infer_batch)] + (["--bf16"] if bf16 else [])
                order = ["ours", "torch"] if (rnd + threads.index(t) + models.index(m)) % 2 == 0 else ["torch", "ours"]
                if bf16:
                    order.insert(1, "ours_bf16")
                for who in order:
                    if who in ("ours", "ours_bf16"):
                        pr = R.run(ours_cmd + (["--bf16"] if who == "ours_bf16" else []))
                        o = last_json(pr.stdout, "train_img_s")
                        if o is not None:
                            (ours if who == "ours" else ours_bf)[(m, t)].append(o)
                        else:
                            R.failures.append(f"{m} at {t} threads: paraformer bench{' --bf16' if who != 'ours' else ''}"
                                              " printed no JSON")
                    elif not a.no_torch:
                        pr = R.run(torch_cmd, env=blas_env(t, passive=True))
                        o = last_json(pr.stdout, "model")
                        torch_info = last_json(pr.stdout, "torch") or torch_info
                        if o is not None:
                            torch_[(m, t)].append(o)
                        else:
                            R.failures.append(f"{m} at {t} threads: {ref} printed no result")

    # ---- tables
    # the FMA peak per thread count: gemm_bench's, else our bench's --peak; the best round
    peak = {}
    for t in threads:
        vals = [g["peak_gflops"].get(str(t)) for g in gemm_runs]
        vals += [x.get("peak_gflops") for m in models for x in ours[(m, t)]]
        vals = [v for v in vals if v]
        peak[t] = max(vals) if vals else None
    out = ["# ParaFormer-C vs PyTorch vs OpenBLAS", "",
           f"- machine: {info['machine']}", f"- date: {info['date']}",
           f"- batch {a.batch} (training), inference batch {a.infer_batch}, warm-up {a.warm}, "
           f"{a.reps} timed repeats per run (batch-1 latency: {3 * a.reps}); medians of {a.rounds} "
           f"round{'s' if a.rounds != 1 else ''}, ours and PyTorch alternating"]
    if torch_info:
        out.append(f"- PyTorch {torch_info.get('torch')} (CPU, fp32, eager), OpenBLAS kernel SkylakeX")
    if gemm_runs:
        g = gemm_runs[0]
        out.append(f"- pf_gemm kernel {g['pf_gemm_kernel']}; OpenBLAS core {g['openblas_core']} "
                   f"({g['openblas_config']})")
    if any(peak.values()):
        out.append("- FP32 FMA peak (best round): " +
                   ", ".join(f"{t} thread{'s' if t != 1 else ''} {fmt(peak[t])} GFLOP/s" for t in threads))
    out += ["", "## Models", "",
            "| model | threads | train img/s ours | PyTorch | ratio | infer img/s ours | PyTorch | ratio "
            "| b1 latency ms ours | PyTorch | ratio | train GFLOP/s | % of peak |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    table = []
    for m in models:
        for t in threads:
            o, q = ours[(m, t)], torch_[(m, t)]
            row = {"model": m, "threads": t,
                   "ours_train_img_s": med([x["train_img_s"] for x in o]),
                   "torch_train_img_s": med([x.get("train_img_s[fp32]") for x in q]),
                   "ours_infer_img_s": med([x["infer_img_s"] for x in o]),
                   "torch_infer_img_s": med([x.get("infer_img_s[fp32]") for x in q]),
                   "ours_latency_b1_ms": med([x["latency_b1_ms"] for x in o]),
                   "torch_latency_b1_ms": med([x.get("latency_b1_ms[fp32]") for x in q]),
                   "ours_train_gflops": med([x["train_gflops"] for x in o]),
                   "params": o[0]["params"] if o else None,
                   "torch_params": q[0].get("params") if q else None}
            row["train_ratio"] = ratio(row["ours_train_img_s"], row["torch_train_img_s"])
            row["infer_ratio"] = ratio(row["ours_infer_img_s"], row["torch_infer_img_s"])
            # latency: >1 means ours is faster (PyTorch's time / ours)
            row["latency_ratio"] = ratio(row["torch_latency_b1_ms"], row["ours_latency_b1_ms"])
            row["peak_frac"] = ratio(row["ours_train_gflops"], peak.get(t))
            table.append(row)
            out.append(f"| {m} | {t} | {fmt(row['ours_train_img_s'])} | {fmt(row['torch_train_img_s'])} | "
                       f"{fmt(row['train_ratio'], 2)} | {fmt(row['ours_infer_img_s'])} | "
                       f"{fmt(row['torch_infer_img_s'])} | {fmt(row['infer_ratio'], 2)} | "
                       f"{fmt(row['ours_latency_b1_ms'], 2)} | {fmt(row['torch_latency_b1_ms'], 2)} | "
                       f"{fmt(row['latency_ratio'], 2)} | {fmt(row['ours_train_gflops'])} | "
                       f"{fmt(None if row['peak_frac'] is None else 100 * row['peak_frac'])}% |")
    out += ["", "Ratios are ours / PyTorch for img/s and PyTorch / ours for latency: above 1 means ours is "
            "faster. Train GFLOP/s: the profiled flops of one step (forward, backward, AdamW) over the "
            "median step time; % of the FMA peak at the same thread count."]
    for r in table:
        if r["params"] and r["torch_params"] and r["params"] != r["torch_params"] and r["threads"] == threads[0]:
            out.append(f"- note: {r['model']}: parameter counts differ (ours {r['params']}, "
                       f"PyTorch {r['torch_params']})")

    # bf16: ours --bf16 against PyTorch's bf16 autocast and both fp32 rows
    bf_table = []
    if bf16:
        out += ["", "## bf16 (ours: bench --bf16, bf16 GEMM operands, fp32 accumulation; PyTorch: "
                "torch.autocast('cpu', dtype=torch.bfloat16))", "",
                "| model | threads | train img/s ours bf16 | ours fp32 | PyTorch fp32 | PyTorch bf16 | "
                "ours bf16 / PyTorch fp32 | ours bf16 / PyTorch bf16 | infer img/s ours bf16 | PyTorch bf16 | ratio |",
                "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        by = {(r["model"], r["threads"]): r for r in table}
        for m in models:
            for t in threads:
                o, q = ours_bf[(m, t)], torch_[(m, t)]
                row = {"model": m, "threads": t,
                       "ours_bf16_train_img_s": med([x["train_img_s"] for x in o]),
                       "ours_fp32_train_img_s": by[(m, t)]["ours_train_img_s"],
                       "torch_fp32_train_img_s": by[(m, t)]["torch_train_img_s"],
                       "torch_bf16_train_img_s": med([x.get("train_img_s[bf16]") for x in q]),
                       "ours_bf16_infer_img_s": med([x["infer_img_s"] for x in o]),
                       "torch_bf16_infer_img_s": med([x.get("infer_img_s[bf16]") for x in q])}
                row["vs_torch_fp32"] = ratio(row["ours_bf16_train_img_s"], row["torch_fp32_train_img_s"])
                row["vs_torch_bf16"] = ratio(row["ours_bf16_train_img_s"], row["torch_bf16_train_img_s"])
                row["infer_ratio"] = ratio(row["ours_bf16_infer_img_s"], row["torch_bf16_infer_img_s"])
                bf_table.append(row)
                out.append(f"| {m} | {t} | {fmt(row['ours_bf16_train_img_s'])} | {fmt(row['ours_fp32_train_img_s'])} | "
                           f"{fmt(row['torch_fp32_train_img_s'])} | {fmt(row['torch_bf16_train_img_s'])} | "
                           f"{fmt(row['vs_torch_fp32'], 2)} | {fmt(row['vs_torch_bf16'], 2)} | "
                           f"{fmt(row['ours_bf16_infer_img_s'])} | {fmt(row['torch_bf16_infer_img_s'])} | "
                           f"{fmt(row['infer_ratio'], 2)} |")
    elif a.bf16 == "off":
        out += ["", "(no bf16 rows: --bf16 off, or this CPU lacks AVX512_BF16, which `bench --bf16` needs)"]

    # per-op breakdown of ours (the first thread count), median over rounds
    t0 = threads[0]
    ops = []
    for m in models:
        o = ours[(m, t0)]
        if o:
            ops = list(o[0]["ops"])
            break
    if ops:
        out += ["", f"## Per-op time of one training step, ours, {t0} thread{'s' if t0 != 1 else ''} "
                "(fwd+bwd ms, GFLOP/s fwd/bwd, share)", "",
                "| op | " + " | ".join(models) + " |", "|---|" + "--:|" * len(models)]
        for op in ops:
            cells = []
            for m in models:
                o = ours[(m, t0)]
                if not o:
                    cells.append("-")
                    continue
                ms = med([x["ops"][op]["fwd_ms"] + x["ops"][op]["bwd_ms"] for x in o])
                fg = med([x["ops"][op]["fwd_gflops"] for x in o])
                bg = med([x["ops"][op]["bwd_gflops"] for x in o])
                sh = med([x["ops"][op]["share"] for x in o])
                cells.append(f"{fmt(ms)} ms, {fmt(fg)}/{fmt(bg)}, {fmt(100 * sh)}%")
            out.append(f"| {op} | " + " | ".join(cells) + " |")

    # scaling
    scaling = []
    if len(threads) > 1:
        hi, lo = max(threads), min(threads)
        out += ["", f"## Scaling: {hi} threads / {lo} thread{'s' if lo != 1 else ''}", "",
                "| model | train ours | train PyTorch | infer ours | infer PyTorch | b1 latency ours | "
                "b1 latency PyTorch |", "|---|--:|--:|--:|--:|--:|--:|"]
        by = {(r["model"], r["threads"]): r for r in table}
        for m in models:
            h, l = by[(m, hi)], by[(m, lo)]
            s = {"model": m, "threads": [hi, lo],
                 "ours_train": ratio(h["ours_train_img_s"], l["ours_train_img_s"]),
                 "torch_train": ratio(h["torch_train_img_s"], l["torch_train_img_s"]),
                 "ours_infer": ratio(h["ours_infer_img_s"], l["ours_infer_img_s"]),
                 "torch_infer": ratio(h["torch_infer_img_s"], l["torch_infer_img_s"]),
                 "ours_latency": ratio(l["ours_latency_b1_ms"], h["ours_latency_b1_ms"]),
                 "torch_latency": ratio(l["torch_latency_b1_ms"], h["torch_latency_b1_ms"])}
            scaling.append(s)
            out.append(f"| {m} | " + " | ".join(fmt(s[k], 2) for k in (
                "ours_train", "torch_train", "ours_infer", "torch_infer", "ours_latency", "torch_latency")) + " |")
        out.append("")
        out.append("Speed-ups (img/s ratio; latency: the 1-thread time over the multi-thread time).")

    # GEMM
    gemm_table, gemm_steps = [], []
    if gemm_runs:
        keys = [(s["config"], s["op"], s["pass"], s["threads"]) for s in gemm_runs[0]["shapes"]]
        out += ["", "## GEMM: pf_gemm vs OpenBLAS cblas_sgemm (GFLOP/s, medians over rounds)", "",
                "| config | op | pass | M x N x K | threads | per step | ours | OpenBLAS | ours/OpenBLAS | "
                "max rel diff |", "|---|---|---|---|--:|--:|--:|--:|--:|--:|"]
        for k in keys:
            rs = [s for g in gemm_runs for s in g["shapes"] if (s["config"], s["op"], s["pass"], s["threads"]) == k]
            s0 = rs[0]
            row = {"config": k[0], "op": k[1], "pass": k[2], "threads": k[3], "M": s0["M"], "N": s0["N"],
                   "K": s0["K"], "per_step": s0["per_step"],
                   "ours_gflops": med([s["ours_gflops"] for s in rs]), "blas_gflops": med([s["blas_gflops"] for s in rs]),
                   "max_rel_diff": max(s["max_rel_diff"] for s in rs)}
            row["ratio"] = ratio(row["ours_gflops"], row["blas_gflops"])
            gemm_table.append(row)
            out.append(f"| {k[0]} | {k[1]} | {k[2]} | {s0['M']} x {s0['N']} x {s0['K']} | {k[3]} | {s0['per_step']} | "
                       f"{fmt(row['ours_gflops'])} | {fmt(row['blas_gflops'])} | {fmt(row['ratio'], 2)} | "
                       f"{row['max_rel_diff']:.1e} |")
        peak16 = {t: max([g.get("bf16_peak_gflops", {}).get(str(t)) or 0 for g in gemm_runs] or [0]) or None
                  for t in threads}
        out += ["", "GEMM time of one training step (every shape times its count per step"
                + ("; bf16: pf_gemm with pf_set_bf16(1), % of the vdpbf16ps peak" if bf16 else "") + "):", "",
                "| config | threads | ours ms | OpenBLAS ms | ours/OpenBLAS | ours GFLOP/s | % of peak |"
                + (" ours bf16 ms | bf16 GFLOP/s | % of bf16 peak |" if bf16 else ""),
                "|---|--:|--:|--:|--:|--:|--:|" + ("--:|--:|--:|" if bf16 else "")]
        for ps in gemm_runs[0]["per_step"]:
            rs = [x for g in gemm_runs for x in g["per_step"]
                  if (x["config"], x["threads"]) == (ps["config"], ps["threads"])]
            row = {"config": ps["config"], "threads": ps["threads"], "ours_ms": med([x["ours_ms"] for x in rs]),
                   "blas_ms": med([x["blas_ms"] for x in rs]), "ours_gflops": med([x["ours_gflops"] for x in rs])}
            row["ratio"] = ratio(row["blas_ms"], row["ours_ms"])
            row["peak_frac"] = ratio(row["ours_gflops"], peak.get(ps["threads"]))
            line = (f"| {row['config']} | {row['threads']} | {fmt(row['ours_ms'])} | {fmt(row['blas_ms'])} | "
                    f"{fmt(row['ratio'], 2)} | {fmt(row['ours_gflops'])} | "
                    f"{fmt(None if row['peak_frac'] is None else 100 * row['peak_frac'])}% |")
            if bf16:
                row["bf16_ms"] = med([x.get("bf16_ms") for x in rs])
                row["bf16_gflops"] = med([x.get("bf16_gflops") for x in rs])
                row["bf16_peak_frac"] = ratio(row["bf16_gflops"], peak16.get(ps["threads"]))
                line += (f" {fmt(row['bf16_ms'])} | {fmt(row['bf16_gflops'])} | "
                         f"{fmt(None if row['bf16_peak_frac'] is None else 100 * row['bf16_peak_frac'])}% |")
            gemm_steps.append(row)
            out.append(line)

    out += ["", "## Commands", "", "Run from the repository root (" + ROOT + "):", "", "```"]
    out += R.commands + ["```"]
    if R.failures:
        out += ["", "## Failures", ""] + [f"- {f}" for f in R.failures]
    print("\n".join(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "torch": torch_info, "peak_gflops": {str(t): peak[t] for t in threads},
                       "models": table, "bf16": bf_table, "scaling": scaling, "gemm": gemm_table, "gemm_per_step": gemm_steps,
                       "runs": {"ours": {f"{m}@{t}": v for (m, t), v in ours.items()},
                                "ours_bf16": {f"{m}@{t}": v for (m, t), v in ours_bf.items()},
                                "torch": {f"{m}@{t}": v for (m, t), v in torch_.items()},
                                "gemm_bench": gemm_runs},
                       "commands": R.commands, "failures": R.failures}, f, indent=1)
        log(f"wrote {a.json}")
    return 1 if R.failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""fmnist_compare.py - the accuracy table of the README: ParaFormer (staged,
interleaved, joint) against a ViT of the same parameter count on real
Fashion-MNIST, each run's test accuracy, training time and branch sweep.

    tools/fmnist_compare.py [--data DIR] [--runs a,b] [--parallel 2] [--out DIR]

--data: the folder with the four Fashion-MNIST IDX files (raw or .gz);
default $PARAFORMER_DATA/fashion-mnist.

Runs `build/paraformer train` for each configuration below (plain Python, no
third-party modules), reads each log's `sweep` and `end` events, prints a
Markdown table and writes one overlaid plot (paraformer plot). With
--parallel 2 two runs go side by side with one thread each (the times are
then 1-thread times on a shared machine); the default runs them one after
the other on all cores. A benchmark, not a test: it takes about an hour.
The pf2x4-* runs (not run by default) are the previous preset's PF(2x4).
"""
import argparse
import json
import os
import subprocess
import sys
import time

# name -> (description, flags). The fmnist-small preset is ParaFormer PF(2x2)
# at width 80 (MLP 320), patch 7, staged: 15 epochs of branch 1, then 20 of
# both. The others change one thing each and get about the same compute,
# counted in branch-epochs: staged 15 x 1 + 20 x 2 = 55, joint 35 x 2 = 70,
# the ViT's 4 layers = 2 branch-equivalents (35 -> 70), interleaved 1 + 2
# (prefix pass) + 2 (joint pass) = 5 per epoch (15 -> 75).
# The pf2x4-* runs are the previous preset's architecture, PF(2x4) at width 64
# (MLP 128), with the same schedules (the frozen variant at most 25 x 1 +
# 25 x 2 = 75 branch-epochs; the ViT has 8 layers).
PF2X4 = ["--depth", "4", "--dim", "64", "--heads", "4", "--mlp-dim", "128"]
RUNS = {
    "pf-staged": ("ParaFormer PF(2x2) w80, staged (the fmnist-small preset)", []),
    "pf-interleaved": ("ParaFormer PF(2x2) w80, interleaved (the authors' loop)",
                       ["--schedule", "interleaved", "--epochs", "15"]),
    "pf-joint": ("ParaFormer PF(2x2) w80, joint (both branches from the start)",
                 ["--schedule", "joint", "--epochs", "35"]),
    "vit-joint": ("ViT 1x4 w80, same width and parameters, joint",
                  ["--branches", "1", "--depth", "4", "--schedule", "joint", "--epochs", "35"]),
    "pf2x4-staged": ("ParaFormer PF(2x4) w64, staged", PF2X4),
    "pf2x4-staged-frozen": ("ParaFormer PF(2x4) w64, staged, branch 1, stem and head frozen in stage 2",
                           PF2X4 + ["--epochs", "25", "--freeze-old", "on", "--old-lr", "0", "--patience", "4"]),
    "pf2x4-interleaved": ("ParaFormer PF(2x4) w64, interleaved (the authors' loop)",
                         PF2X4 + ["--schedule", "interleaved", "--epochs", "15"]),
    "pf2x4-joint": ("ParaFormer PF(2x4) w64, joint (both branches from the start)",
                   PF2X4 + ["--schedule", "joint", "--epochs", "35"]),
    "vit8-joint": ("ViT 1x8 w64, same width and parameters as PF(2x4), joint",
                    PF2X4 + ["--branches", "1", "--depth", "8", "--schedule", "joint", "--epochs", "35"]),
}


def last_event(path, name):
    found = None
    with open(path) as f:
        for line in f:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("event") == name:
                found = d
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get("PARAFORMER_DATA")
    ap.add_argument("--data", default=os.path.join(env, "fashion-mnist") if env else None,
                    help="folder with the Fashion-MNIST IDX files (default: $PARAFORMER_DATA/fashion-mnist)")
    ap.add_argument("--runs", default="pf-joint,vit-joint,pf-interleaved,pf-staged", help="which runs (default: all): " + ", ".join(RUNS))
    ap.add_argument("--parallel", type=int, default=1, help="runs side by side, one thread each (default 1)")
    ap.add_argument("--out", default="runs/compare", help="logs, checkpoints, plot (default runs/compare)")
    ap.add_argument("--exe", default="build/paraformer")
    ap.add_argument("--seed", default="1")
    a = ap.parse_args()
    if not a.data:
        ap.error("give --data DIR (the folder with the four Fashion-MNIST IDX files) or set PARAFORMER_DATA")
    names = [n for n in a.runs.split(",") if n]
    for n in names:
        if n not in RUNS:
            sys.exit("unknown run %r (known: %s)" % (n, ", ".join(RUNS)))
    os.makedirs(a.out, exist_ok=True)
    threads = "1" if a.parallel > 1 else str(os.cpu_count() or 1)
    cmds, pending, running = {}, list(names), []
    t0 = time.time()
    while pending or running:
        while pending and len(running) < a.parallel:
            n = pending.pop(0)
            log = os.path.join(a.out, n + ".jsonl")
            if os.path.exists(log):
                os.remove(log)
            cmd = [a.exe, "train", "--preset", "fmnist-small", "--data", "fmnist:" + a.data, "--threads", threads,
                   "--seed", a.seed, "--quiet", "--overwrite", "--out", os.path.join(a.out, n + ".safetensors"), "--log", log] + RUNS[n][1]
            cmds[n] = cmd
            print("$ " + " ".join(cmd), flush=True)
            running.append((n, subprocess.Popen(cmd, stdout=open(os.path.join(a.out, n + ".txt"), "w"),
                                                stderr=subprocess.STDOUT)))
        time.sleep(2)
        for n, p in list(running):
            if p.poll() is not None:
                running.remove((n, p))
                print("  %s finished (exit %d, %.0f s since start)" % (n, p.returncode, time.time() - t0), flush=True)
    print()
    print("| run | params | train time | test accuracy | branch sweep (k = 1..n) |")
    print("|---|--:|--:|--:|---|")
    for n in names:
        log = os.path.join(a.out, n + ".jsonl")
        start, sweep, end = last_event(log, "start"), last_event(log, "sweep"), last_event(log, "end")
        if not (start and sweep and end):
            print("| %s | failed: see %s |" % (n, os.path.join(a.out, n + ".txt")))
            continue
        print("| %s | %d | %.0f s | %.2f %% | %s |" % (RUNS[n][0], start["params"], end["time_s"],
                                                  100 * end["test_accuracy"],
                                                  " / ".join("%.2f" % (100 * v) for v in sweep["sweep"])))
    print()
    print("threads per run: %s%s; machine: %s" % (threads, " (%d runs side by side)" % a.parallel if a.parallel > 1 else "",
                                                   os.uname().nodename))
    logs = [x for n in names for x in ("--log", os.path.join(a.out, n + ".jsonl"))]
    subprocess.call([a.exe, "plot"] + logs + ["--out", os.path.join(a.out, "compare.svg"),
                                              "--title", "Fashion-MNIST: ParaFormer schedules and a ViT, same parameters"])


if __name__ == "__main__":
    main()

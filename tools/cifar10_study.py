#!/usr/bin/env python3
"""cifar10_study.py - the paper's claims tested on CIFAR-10, on a CPU.

    tools/cifar10_study.py --data DIR [--seeds 1,2] [--parallel 2] [--out runs/cifar10]
    tools/cifar10_study.py --data DIR --scale 0.2  # every run at a fifth of its epochs
    tools/cifar10_study.py --data DIR --smoke      # a few minutes: the pipeline only

--data: the folder with CIFAR-10's binary batches (data_batch_1..5.bin,
test_batch.bin, raw or .gz); default $PARAFORMER_DATA/cifar-10-batches-bin.

Trains every configuration below with `build/paraformer train --preset
cifar10-small` (plus the flags that make it that configuration) for every
seed, then:
  * a table per configuration: parameters, wall time, test accuracy (mean
    over seeds, and the range), the branch sweep;
  * the comparisons the paper makes, each called a win only where the
    difference of the means is larger than the spread (the largest range of
    the two): ParaFormer (staged, interleaved, joint) against a ViT of the
    same width and parameters; the authors' variant (normed residual, sum
    aggregation, no qkv bias) against ours (prenorm, delta);
  * the compression curve of the staged runs: accuracy and file size of the
    first k branches (`compress --keep k`; its accuracy is the sweep's, which
    the tests hold bit-equal to the compressed model's), and the smallest k
    that keeps 95 % of the full model's accuracy;
  * two SVG plots: validation accuracy against wall time, test accuracy
    against the branches used.
It writes them into docs/results.md between the markers
<!-- cifar10-study:begin --> and <!-- cifar10-study:end --> (appended the
first time), the SVGs beside it, and the same tables to stdout.

Equal compute: the runs get about the same work, counted in layer-epochs
(one epoch over the training split through one layer): staged 32 x 3 +
20 x 6 = 216; joint and the ViT (6 layers each) 36 x 6 = 216; interleaved
14 x (3 + 6 prefix steps + 6 joint) = 210 (--scale multiplies every count).
The wall times are in the table; with --parallel 2 two runs share the
machine with one thread each, so their times compare only with each
other's. Plain Python (no third-party modules); a benchmark, not a
test: the full study takes many hours on 2 cores.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_compare import machine  # noqa: E402  (the same machine line as the benchmarks)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (description, flags after --preset cifar10-small, epochs: per stage for staged runs)
RUNS = {
    "pf-staged": ("ParaFormer PF(2x3) w128, staged (the cifar10-small preset)", [], [32, 20]),
    "pf-joint": ("ParaFormer PF(2x3) w128, joint", ["--schedule", "joint"], [36]),
    "pf-interleaved": ("ParaFormer PF(2x3) w128, interleaved (the authors' loop)", ["--schedule", "interleaved"], [14]),
    "vit-joint": ("ViT 1x6 w128, same width and parameters, joint",
                  ["--branches", "1", "--depth", "6", "--schedule", "joint"], [36]),
    "paper-staged": ("the authors' variant (normed residual, sum, no qkv bias), staged",
                     ["--residual", "normed", "--aggregate", "sum", "--qkv-bias", "off"], [32, 20]),
}
BEGIN, END = "<!-- cifar10-study:begin -->", "<!-- cifar10-study:end -->"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def events(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def last(evs, name):
    found = None
    for e in evs:
        if e.get("event") == name:
            found = e
    return found


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def pct(x):
    return "%.2f" % (100 * x)


def svg_lines(path, title, xlabel, ylabel, series, xmin=None, xmax=None, ymin=None, ymax=None):
    """series: [(label, colour, [(x, y), ...], dashed)]; writes path via path.tmp."""
    W, H, L, R, T, B = 760, 440, 70, 230, 40, 50
    pts = [p for s in series for p in s[2]]
    if not pts:
        return
    x0 = min(p[0] for p in pts) if xmin is None else xmin
    x1 = max(p[0] for p in pts) if xmax is None else xmax
    y0 = min(p[1] for p in pts) if ymin is None else ymin
    y1 = max(p[1] for p in pts) if ymax is None else ymax
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def X(v):
        return L + (v - x0) / (x1 - x0) * (W - L - R)

    def Y(v):
        return H - B - (v - y0) / (y1 - y0) * (H - T - B)

    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="15">%s</text>' % (L, title)]
    for i in range(6):
        yv, xv = y0 + (y1 - y0) * i / 5, x0 + (x1 - x0) * i / 5
        o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (L, W - R, Y(yv), Y(yv)))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%.3g</text>' % (L - 6, Y(yv) + 4, yv))
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%.3g</text>' % (X(xv), H - B + 16, xv))
    o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (L, T, W - L - R, H - T - B))
    o.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % ((L + W - R) // 2, H - 12, xlabel))
    o.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>' % (
        (T + H - B) // 2, (T + H - B) // 2, ylabel))
    for k, (label, colour, p, dashed) in enumerate(series):
        d = " ".join("%.1f,%.1f" % (X(a), Y(b)) for a, b in p)
        o.append('<polyline fill="none" stroke="%s" stroke-width="1.8"%s points="%s"/>' % (
            colour, ' stroke-dasharray="5,3"' if dashed else "", d))
        for a, b in p if len(p) < 12 else []:
            o.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (X(a), Y(b), colour))
        o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (
            W - R + 12, W - R + 32, T + 10 + 18 * k, T + 10 + 18 * k, colour, ' stroke-dasharray="5,3"' if dashed else ""))
        o.append('<text x="%d" y="%d">%s</text>' % (W - R + 38, T + 14 + 18 * k, label))
    o.append("</svg>")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(o) + "\n")
    os.replace(path + ".tmp", path)


def epochs(n, a):
    """The run's --epochs: its budget times --scale (1 epoch per stage for --smoke), at least 1."""
    return ",".join(str(1 if a.smoke else max(1, int(round(e * a.scale)))) for e in RUNS[n][2])


def run_all(a, names, seeds):
    threads = "1" if a.parallel > 1 else str(os.cpu_count() or 1)
    pending = [(n, s) for s in seeds for n in names]
    running, t0 = [], time.time()
    while pending or running:
        while pending and len(running) < a.parallel:
            n, s = pending.pop(0)
            base = os.path.join(a.out, "%s-s%s" % (n, s))
            if a.reuse and last(events(base + ".jsonl"), "end"):
                print("  %s seed %s: reusing %s.jsonl" % (n, s, base), flush=True)
                continue
            if os.path.exists(base + ".jsonl"):
                os.remove(base + ".jsonl")
            data = "cifar10:" + a.data + ("#limit=2000" if a.smoke else "")
            test = ["--test", "cifar10:" + a.data + "@test#limit=1000"] if a.smoke else []
            cmd = [a.exe, "train", "--preset", "cifar10-small", "--data", data, "--threads", threads, "--seed", s,
                   "--quiet", "--overwrite", "--out", base + ".safetensors", "--log", base + ".jsonl"] + test + \
                RUNS[n][1] + ["--epochs", epochs(n, a)] + a.extra.split()
            print("$ " + " ".join(cmd), flush=True)
            running.append((n, s, subprocess.Popen(cmd, cwd=ROOT, stdout=open(base + ".txt", "w"),
                                                   stderr=subprocess.STDOUT)))
        time.sleep(2)
        for n, s, p in list(running):
            if p.poll() is not None:
                running.remove((n, s, p))
                print("  %s seed %s finished (exit %d, %.0f s since start)" % (n, s, p.returncode, time.time() - t0),
                      flush=True)
    return threads


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get("PARAFORMER_DATA")
    ap.add_argument("--data", default=os.path.join(env, "cifar-10-batches-bin") if env else None,
                    help="folder with CIFAR-10's binary batches (default: $PARAFORMER_DATA/cifar-10-batches-bin)")
    ap.add_argument("--runs", default=",".join(RUNS), help="which configurations (default: all): " + ", ".join(RUNS))
    ap.add_argument("--seeds", default="1,2", help="seeds, comma list (default 1,2)")
    ap.add_argument("--parallel", type=int, default=1, help="runs side by side, one thread each (default 1)")
    ap.add_argument("--out", default="runs/cifar10", help="logs, checkpoints (default runs/cifar10)")
    ap.add_argument("--exe", default="build/paraformer")
    ap.add_argument("--extra", default="", help="more train flags for every run, as one argument (e.g. --extra=--bf16)")
    ap.add_argument("--results", default="docs/results.md", help="the Markdown file to update ('' : none)")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs (a log with an end event)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="every run's epochs times F (default 1: the full budget; 0.2 takes about a fifth of the time)")
    ap.add_argument("--smoke", action="store_true", help="1 epoch per stage on 2000 images: tests the pipeline")
    a = ap.parse_args()
    if not 0 < a.scale <= 10:
        ap.error("--scale must be in (0, 10]")
    if not a.data:
        ap.error("give --data DIR (the folder with CIFAR-10's binary batches) or set PARAFORMER_DATA")
    names = [n for n in a.runs.split(",") if n]
    seeds = [s for s in a.seeds.split(",") if s]
    for n in names:
        if n not in RUNS:
            ap.error("unknown run %r (known: %s)" % (n, ", ".join(RUNS)))
    a.data = os.path.abspath(a.data)
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    threads = run_all(a, names, seeds)

    # ---- per run and seed
    res = {}
    for n in names:
        for s in seeds:
            base = os.path.join(a.out, "%s-s%s" % (n, s))
            ev = events(base + ".jsonl")
            st, sw, en = last(ev, "start"), last(ev, "sweep"), last(ev, "end")
            if not (st and sw and en):
                print("%s seed %s failed: see %s.txt" % (n, s, base), file=sys.stderr)
                continue
            curve = [(e["time_s"], e["accuracy"]) for e in ev if e.get("event") == "eval" and "time_s" in e]
            res[(n, s)] = {"params": st["params"], "time": en["time_s"], "acc": en["test_accuracy"],
                           "sweep": sw["sweep"], "curve": curve, "base": base}
    if not res:
        sys.exit("no run finished")
    lines = ["### CIFAR-10: ParaFormer against a ViT, schedules, variants and compression", "",
             "`tools/cifar10_study.py --seeds %s --parallel %d%s%s`, %s thread%s per run%s; machine: %s." % (
                 a.seeds, a.parallel, (" --scale %g" % a.scale) if a.scale != 1.0 else "",
                 (" --extra '%s'" % a.extra) if a.extra else "", threads, "" if threads == "1" else "s",
                 " (two runs side by side)" if a.parallel > 1 else "", machine()), ""]
    if a.scale != 1.0 and not a.smoke:
        lines += ["**At %g of the full budget** (`--scale %g`): epochs per run %s." % (
            a.scale, a.scale, ", ".join("%s %s" % (n, epochs(n, a)) for n in names)), ""]
    if a.smoke:
        lines += ["**A smoke run (1 epoch per stage on 2000 images): the numbers test the pipeline only.**", ""]
    lines += ["| configuration | params | wall time | test accuracy, mean (range) | branch sweep k = 1..n (mean) |",
              "|---|--:|--:|--:|---|"]
    summary = {}
    for n in names:
        rs = [res[(n, s)] for s in seeds if (n, s) in res]
        if not rs:
            lines.append("| %s | failed | | | |" % RUNS[n][0])
            continue
        accs = [r["acc"] for r in rs]
        sweep = [mean([r["sweep"][k] for r in rs]) for k in range(len(rs[0]["sweep"]))]
        summary[n] = {"acc": mean(accs), "lo": min(accs), "hi": max(accs), "sweep": sweep, "runs": rs}
        lines.append("| %s | %d | %.0f s | %s %% (%s–%s) | %s |" % (
            RUNS[n][0], rs[0]["params"], mean([r["time"] for r in rs]), pct(mean(accs)), pct(min(accs)),
            pct(max(accs)), " / ".join(pct(v) for v in sweep)))

    def compare(x, y, what):
        if x not in summary or y not in summary:
            return
        sx, sy = summary[x], summary[y]
        d, spread = sx["acc"] - sy["acc"], max(sx["hi"] - sx["lo"], sy["hi"] - sy["lo"])
        verdict = "a tie (within the spread)" if abs(d) <= spread else (
            "%s wins" % x if d > 0 else "%s loses" % x)
        lines.append("- %s: %s %s %% vs %s %s %%, difference %+.2f points, spread %.2f: **%s**." % (
            what, x, pct(sx["acc"]), y, pct(sy["acc"]), 100 * d, 100 * spread, verdict))

    lines += ["", "Comparisons (a difference no larger than the seeds' spread is called a tie):", ""]
    for x in ("pf-staged", "pf-interleaved", "pf-joint"):
        compare(x, "vit-joint", "ParaFormer (%s) against the ViT" % x[3:])
    compare("paper-staged", "pf-staged", "the authors' variant against ours (both staged)")

    # ---- compression curve of the staged runs
    if "pf-staged" in summary:
        full = summary["pf-staged"]["acc"]
        r0 = summary["pf-staged"]["runs"][0]
        nb = len(r0["sweep"])
        sizes = []
        for k in range(1, nb + 1):
            out = r0["base"] + ".keep%d.safetensors" % k
            subprocess.run([a.exe, "compress", "--model", r0["base"] + ".safetensors", "--keep", str(k), "--out", out],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sizes.append(os.path.getsize(out) if os.path.exists(out) else None)
        sw = summary["pf-staged"]["sweep"]
        keep = next((k + 1 for k in range(nb) if sw[k] >= 0.95 * sw[-1]), nb)
        lines += ["", "Compression (`compress --keep k` of the staged model; accuracy: the sweep, mean over seeds):", "",
                  "| branches kept | file size | of the full size | test accuracy | of the full accuracy |",
                  "|--:|--:|--:|--:|--:|"]
        for k in range(nb):
            sz = sizes[k]
            lines.append("| %d | %s | %s | %s %% | %.1f %% |" % (
                k + 1, "%.2f MB" % (sz / 1e6) if sz else "-", "%.0f %%" % (100.0 * sz / sizes[-1]) if sz and sizes[-1] else "-",
                pct(sw[k]), 100 * sw[k] / sw[-1] if sw[-1] else 0))
        ratio = sizes[-1] / sizes[keep - 1] if sizes[keep - 1] and sizes[-1] else float("nan")
        lines += ["", "The first %d of %d branches keep 95 %% of the accuracy (%s %% of %s %%): compression %.2fx." % (
            keep, nb, pct(sw[keep - 1]), pct(full), ratio)]

    # ---- plots
    docs = os.path.dirname(os.path.abspath(a.results)) if a.results else a.out
    t_svg, b_svg = os.path.join(docs, "cifar10-time.svg"), os.path.join(docs, "cifar10-branches.svg")
    series = []
    for i, n in enumerate(summary):
        for j, r in enumerate(summary[n]["runs"]):
            series.append(("%s s%s" % (n, seeds[j]) if len(seeds) > 1 else n, COLORS[i % len(COLORS)],
                           [(t / 60.0, 100 * v) for t, v in r["curve"]], j > 0))
    svg_lines(t_svg, "CIFAR-10: validation accuracy against wall time", "minutes", "validation accuracy (%)", series)
    series = [(n, COLORS[i % len(COLORS)], [(k + 1, 100 * v) for k, v in enumerate(summary[n]["sweep"])], False)
              for i, n in enumerate(summary) if len(summary[n]["sweep"]) > 1]
    svg_lines(b_svg, "CIFAR-10: test accuracy of the first k branches", "branches used (k)", "test accuracy (%)", series)
    lines += ["", "![accuracy against wall time](%s)" % os.path.basename(t_svg), "",
              "![accuracy against branches used](%s)" % os.path.basename(b_svg)]
    text = "\n".join(lines)
    print(text)
    if a.results:
        old = open(a.results).read() if os.path.exists(a.results) else ""
        block = BEGIN + "\n" + text + "\n" + END
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + block + "\n"
        with open(a.results + ".tmp", "w") as f:
            f.write(new)
        os.replace(a.results + ".tmp", a.results)
        print("wrote %s, %s, %s" % (a.results, t_svg, b_svg), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

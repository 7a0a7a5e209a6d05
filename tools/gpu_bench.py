#!/usr/bin/env python3
"""gpu_bench.py - the GPU backend against PyTorch, in one run on one GPU.

    make cuda
    python3 tools/gpu_bench.py [--models vit12,pf4x3] [--no-compile] [--json out.json]

In one invocation, on this machine's GPU 0 (docs/design.md §6):
  * build/cuda/paraformer bench --device cuda [--bf16] --zoo M --json for the
    standard configurations (32x32x3, patch 4, width 192, 3 heads, MLP 768;
    vit12 = ViT 1x12 and pf4x3 = PF(4x3), 4 branches of 3 layers, by
    default), fp32 and bf16, batch 256, inference batch 1024, batch-1 latency;
  * the PyTorch reference model (tools/torch_ref.py --device cuda --compile:
    fp32 and bf16 eager, bf16 torch.compile, and the branches on CUDA
    streams; its defaults take about two minutes) on the same models, batch
    sizes and repeat counts.
It prints one table per model and the ratios the GPU speed issue asks for:
training images/s against PyTorch's best (any precision, eager or compile),
inference images/s against torch.compile bf16, batch-1 latency, and
ParaFormer 4x3's batch-1 latency against ViT 1x12's. Each figure is a median
over --reps timed repeats after --warm untimed ones (both sides the same).

Only the standard library is needed here; PyTorch runs in a subprocess with
the same python3. The runs go in order of what they are worth: ours (each
model, fp32 and bf16), then PyTorch eager per model, then torch.compile per
model (the slowest to start). Each run has a time limit (--timeout, cut to
what is left of --budget); a run that fails or runs past it is recorded
under "failed", one that cannot start before the budget ends under
"skipped", and the others still run. With --json, the file is rewritten (to
a temporary file, then renamed) after every run, so a session cut short
keeps what was measured. Exit status: 0, or 1 if a run failed or was
skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json_lines(cmd, timeout):
    """Runs cmd for at most timeout seconds; returns (the JSON objects it
    printed, one per line or one multi-line object; None on failure) and
    why it failed (None on success)."""
    print("$ " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        why = "ran past --timeout %g s" % timeout
        print("gpu_bench: %s %s" % (cmd[0], why), file=sys.stderr, flush=True)
        return None, why
    except OSError as e:
        print("gpu_bench: %s: %s" % (cmd[0], e), file=sys.stderr, flush=True)
        return None, str(e)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-2000:])
        why = "exit %d: %s" % (p.returncode, (p.stderr.strip().splitlines() or ["(no message)"])[-1][:300])
        print("gpu_bench: %s failed (%s)" % (cmd[0], why), file=sys.stderr, flush=True)
        return None, why
    text = p.stdout.strip()
    try:
        return [json.loads(text)], None
    except ValueError:
        try:
            objs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        except ValueError as e:
            return None, "output is not JSON: %s" % e
        return (objs, None) if objs else (None, "no JSON in the output")


def save(path, out):
    """Writes out to path through a temporary file and a rename (no torn file)."""
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", default=os.path.join(ROOT, "build/cuda/paraformer"))
    ap.add_argument("--torch-ref", default=os.path.join(HERE, "torch_ref.py"),
                    help="the PyTorch side (default: torch_ref.py beside this script)")
    ap.add_argument("--models", default="vit12,pf4x3", help="pfBxL / vitN names (default %(default)s)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--infer-batch", type=int, default=1024)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-torch", action="store_true", help="ours only")
    ap.add_argument("--no-compile", action="store_true", help="PyTorch eager only (no torch.compile: faster)")
    ap.add_argument("--json", help="write every measurement here (rewritten after each run)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds each run may take: ours per model and precision, PyTorch's per model and mode "
                         "(default %(default)s)")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds all the runs may take together (0: no limit); a run that cannot start with "
                         "10 s left is skipped")
    a = ap.parse_args()
    t0 = time.time()

    def limit(what):
        """The time limit of the next run, or None (recorded as skipped) when the budget is spent."""
        if not a.budget:
            return a.timeout
        left = a.budget - (time.time() - t0)
        if left < 10:
            out["skipped"][what] = "past --budget %g s" % a.budget
            print("gpu_bench: skipped %s: past --budget %g s" % (what, a.budget), file=sys.stderr, flush=True)
            save(a.json, out)
            return None
        return min(a.timeout, left)

    models = a.models.split(",")
    common = ["--batch", str(a.batch), "--infer-batch", str(a.infer_batch), "--warm", str(a.warm),
              "--reps", str(a.reps)]
    ours = {}
    torch = {}
    gpu = torch_version = None
    out = {"gpu": None, "ours": {}, "torch": torch, "ratios": {}, "failed": {}, "skipped": {}}
    for m in models:
        for prec in ("fp32", "bf16"):
            what = "ours %s/%s" % (m, prec)
            lim = limit(what)
            if lim is None:
                continue
            cmd = [a.exe, "bench", "--zoo", m, "--device", "cuda", "--json"] + common + (["--bf16"] if prec == "bf16" else [])
            objs, why = run_json_lines(cmd, lim)
            if objs:
                ours[(m, prec)] = objs[0]
                out["ours"]["%s/%s" % (m, prec)] = objs[0]
            else:
                out["failed"][what] = why
            save(a.json, out)
    modes = [] if a.no_torch else [("eager", [])] + ([] if a.no_compile else [("compile", ["--compile", "--compile-only"])])
    for mode, flags in modes:
        for m in models:
            what = "torch %s %s" % (mode, m)
            lim = limit(what)
            if lim is None:
                continue
            cmd = [sys.executable, a.torch_ref, "--device", "cuda", "--models", m] + common + flags
            objs, why = run_json_lines(cmd, lim)
            for r in objs or []:
                if "gpu" in r:
                    gpu = r["gpu"]
                    torch_version = r.get("torch")
                elif "model" in r:
                    torch.setdefault(r["model"], {}).update(r)
            if why:
                out["failed"][what] = why
            save(a.json, out)
    if gpu is None:
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                                 stdout=subprocess.PIPE, text=True).stdout.strip() or None
        except OSError:
            pass
    print()
    print("GPU: %s%s" % (gpu or "?", "; PyTorch %s" % torch_version if torch else ""))
    out["gpu"] = gpu
    for m in models:
        print()
        print("%s (batch %d, inference batch %d)" % (m, a.batch, a.infer_batch))
        print("| run | train img/s | infer img/s | batch-1 latency ms |")
        print("|---|--:|--:|--:|")
        for prec in ("fp32", "bf16"):
            r = ours.get((m, prec))
            if r is None:
                what = "ours %s/%s" % (m, prec)
                print("| ParaFormer-C %s | %s | | |" % (prec, "failed: %s" % out["failed"][what] if what in out["failed"]
                                                      else "skipped: %s" % out["skipped"].get(what)))
                continue
            print("| ParaFormer-C %s | %.0f | %.0f | %.3f |" % (prec, r["train_img_s"], r["infer_img_s"], r["latency_b1_ms"]))
            if "train_host_img_s" in r:  # the images copied from the host at each call
                print("| ParaFormer-C %s, images from the host | %.0f | %.0f | |"
                      % (prec, r["train_host_img_s"], r["infer_host_img_s"]))
        t = torch.get(m)
        if not t or (m, "fp32") not in ours or (m, "bf16") not in ours:
            continue
        tags = sorted(k[len("train_img_s["):-1] for k in t if k.startswith("train_img_s["))
        if not tags:
            continue
        for tag in tags:
            print("| PyTorch %s | %.0f | %.0f | %.3f |" % (tag, t["train_img_s[%s]" % tag], t["infer_img_s[%s]" % tag],
                                                       t["latency_b1_ms[%s]" % tag]))
        best_train = max(t["train_img_s[%s]" % g] for g in tags)
        ours_train = max(ours[(m, p)]["train_img_s"] for p in ("fp32", "bf16"))
        ours_infer = max(ours[(m, p)]["infer_img_s"] for p in ("fp32", "bf16"))
        ours_b1 = min(ours[(m, p)]["latency_b1_ms"] for p in ("fp32", "bf16"))
        compiled = t.get("infer_img_s[bf16+compile]")
        best_b1 = min(v for k, v in t.items() if k.startswith("latency_b1_ms["))
        ratios = {"train_vs_torch_best": ours_train / best_train,
                  "train_bf16_vs_torch_best": ours[(m, "bf16")]["train_img_s"] / best_train,
                  "infer_vs_torch_compile_bf16": ours_infer / compiled if compiled else None,
                  "latency_b1_vs_torch_best": ours_b1 / best_b1}
        out["ratios"][m] = ratios
        print()
        print("ratios: training (bf16) %.2fx PyTorch's best (%.0f img/s); inference %s torch.compile bf16; "
              "batch-1 latency %.3f ms = %.2fx PyTorch's best (%.3f ms)"
              % (ratios["train_bf16_vs_torch_best"], best_train,
                 "%.2fx" % ratios["infer_vs_torch_compile_bf16"] if compiled else "(no compile)",
                 ours_b1, ratios["latency_b1_vs_torch_best"], best_b1))
    if all((m, p) in ours for m in ("vit12", "pf4x3") for p in ("fp32", "bf16")):
        r = min(ours[("pf4x3", p)]["latency_b1_ms"] for p in ("fp32", "bf16")) / \
            min(ours[("vit12", p)]["latency_b1_ms"] for p in ("fp32", "bf16"))
        out["ratios"]["pf4x3_vs_vit12_latency_b1"] = r
        print()
        print("ParaFormer 4x3 batch-1 latency / ViT 1x12's (ours): %.2f" % r)
    save(a.json, out)
    for what, why in out["failed"].items():
        print("gpu_bench: failed: %s (%s)" % (what, why), file=sys.stderr)
    for what, why in out["skipped"].items():
        print("gpu_bench: skipped: %s (%s)" % (what, why), file=sys.stderr)
    return 1 if out["failed"] or out["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())

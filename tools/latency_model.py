#!/usr/bin/env python3
"""latency_model.py - a model (not a measurement) of ParaFormer's latency on
2, 4 and 8 GPUs: one branch group per GPU, against a GPipe-style pipeline of
the same layers stacked as a ViT, built from single-GPU bench times.

    python3 tools/latency_model.py --run --json times.json    # on a GPU: measure, then model
    python3 tools/latency_model.py --from times.json          # the model from saved times

Measured on one GPU with `paraformer bench --device cuda --json` (--run does
it; --exe names the program): for ParaFormer pfBxL (B branches of L layers)
  t(pfkxL)  the model with k of its branches, for k = ceil(B/n), n = 1, 2, 4, 8
  t(vitD)   the ViT of the same D = L*B layers, and vit1, vit2
each as batch-1 latency and as one inference call of --batch images.

The model (per GPU count n; S = batch x tokens x width x bytes per value is
the activation a collective moves):
  stem + head          E = 2 t(vit1) - t(vit2)         (t(vitL) = E + L l)
  branch per GPU       t_bp(n) = t(pfkxL) + bcast(S) + allreduce(S, n)
                       (GPU 0 embeds and broadcasts X0; each GPU runs its
                       k = ceil(B/n) branches as one batch; the branch
                       outputs are summed: the backend runs ncclReduce onto
                       GPU 0, which runs the head; the model charges an
                       all-reduce, which costs at least as much)
  pipeline (GPipe)     t_pp(n) = t(vitD) + (n - 1) p2p(S)
                       (n stages of D/n layers run one after another for
                       one batch: splitting adds transfers, not parallelism;
                       micro-batching raises throughput, not latency)
  collectives          NCCL's cost model with its bus bandwidth beta:
                       allreduce = alpha + 2 (n - 1) / n * S / beta,
                       bcast = p2p = alpha + S / beta (0 on one GPU).
                       alpha and beta are published H100 NVLink figures,
                       not measurements: alpha 2 to 10 us (both ends are
                       shown), beta 370 GB/s of bus bandwidth.
Exit status 0, or 1 if a bench run failed.
"""
import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_pf(name):
    """'pfBxL' (B branches of L layers, as everywhere here) -> (L, B)."""
    try:
        B, L = (int(v) for v in name[2:].split("x"))
        if not name.startswith("pf") or B < 1 or L < 1:
            raise ValueError
    except ValueError:
        sys.exit("latency_model: --model must be pfBxL, B branches of L layers (e.g. pf4x3), not %r" % name)
    return L, B


def needed(L, B, gpus):
    names = ["vit1", "vit2", "vit%d" % (L * B)]
    for n in gpus:
        names.append("pf%dx%d" % (math.ceil(B / n), L))
    return sorted(set(names), key=names.index)


def measure(a, names):
    out = {}
    for nm in names:
        cmd = [a.exe, "bench", "--zoo", nm, "--device", "cuda", "--json", "--batch", str(a.batch),
               "--infer-batch", str(a.batch), "--warm", str(a.warm), "--reps", str(a.reps)] + (["--bf16"] if a.bf16 else [])
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.stderr.write(p.stderr)
            sys.exit(1)
        r = json.loads(p.stdout)
        out[nm] = {"latency_b1_ms": r["latency_b1_ms"], "batch_ms": r["infer_batch_ms"], "tokens": r["tokens"],
                   "dim": r["dim"], "batch": r["infer_batch"], "precision": r["precision"]}
    return out


def collectives_ms(S, n, alpha_us, beta_gbs):
    """NCCL's cost model, in ms, for a message of S bytes on n GPUs: (broadcast
    or point-to-point, all-reduce); nothing moves on one GPU."""
    if n < 2:
        return 0.0, 0.0
    a, b = alpha_us * 1e-3, beta_gbs * 1e6  # ms; bytes per ms
    return a + S / b, a + 2.0 * (n - 1) / n * S / b


def model(times, L, B, gpus, alphas_us, beta_gbs):
    D = L * B
    ref = times["vit%d" % D]
    T, C, prec = ref["tokens"], ref["dim"], ref["precision"]
    esize = 2 if prec == "bf16" else 4
    rows = []
    for key, batch in (("latency_b1_ms", 1), ("batch_ms", ref["batch"])):
        S = batch * T * C * esize
        E = 2 * times["vit1"][key] - times["vit2"][key]
        for n in gpus:
            k = math.ceil(B / n)
            row = {"batch": batch, "gpus": n, "branches_per_gpu": k, "message_bytes": S, "stem_head_ms": E,
                   "branches_ms": times["pf%dx%d" % (k, L)][key], "vit_ms": times["vit%d" % D][key],
                   "idle_gpus": max(0, n - B), "branch_per_gpu_ms": [], "pipeline_ms": []}
            for alpha in alphas_us:
                bcast, allreduce = collectives_ms(S, n, alpha, beta_gbs)
                row["branch_per_gpu_ms"].append(row["branches_ms"] + bcast + allreduce)
                row["pipeline_ms"].append(row["vit_ms"] + (n - 1) * bcast)  # n - 1 point-to-point hand-offs
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pf4x3", help="ParaFormer pfBxL (default pf4x3: 4 branches of 3 layers)")
    ap.add_argument("--gpus", default="1,2,4,8")
    ap.add_argument("--run", action="store_true", help="measure the times on this machine's GPU 0 first")
    ap.add_argument("--from", dest="src", help="times saved by an earlier --run --json")
    ap.add_argument("--json", help="save the times and the model here")
    ap.add_argument("--exe", default=os.path.join(ROOT, "build/cuda/paraformer"))
    ap.add_argument("--batch", type=int, default=256, help="the large batch (default 256)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--alpha-us", default="2,10",
                    help="ASSUMED latency of a collective, us, one value or a range lo,hi (default %(default)s: "
                         "published H100 NVLink figures)")
    ap.add_argument("--beta-gbs", type=float, default=370.0,
                    help="ASSUMED bus bandwidth, GB/s (default %(default)s: H100 NVLink, NCCL's busbw)")
    a = ap.parse_args()
    L, B = parse_pf(a.model)
    gpus = [int(g) for g in a.gpus.split(",")]
    try:
        alphas = [float(v) for v in a.alpha_us.split(",")]
        if not 1 <= len(alphas) <= 2 or min(alphas) < 0 or a.beta_gbs <= 0:
            raise ValueError
    except ValueError:
        sys.exit("latency_model: --alpha-us must be one or two non-negative numbers (lo,hi) and --beta-gbs positive")
    names = needed(L, B, gpus)
    if a.run:
        times = measure(a, names)
    elif a.src:
        with open(a.src) as f:
            times = json.load(f)["times"]
    else:
        sys.exit("latency_model: --run (measure) or --from FILE (saved times)")
    missing = [nm for nm in names if nm not in times]
    if missing:
        sys.exit("latency_model: no times for %s" % ", ".join(missing))
    rows = model(times, L, B, gpus, alphas, a.beta_gbs)
    span = (lambda v: "%.3f" % v[0]) if len(alphas) == 1 else (lambda v: "%.3f-%.3f" % (v[0], v[1]))
    print()
    print("A MODEL, not a measurement: %s (%d branches x %d layers) against a ViT of %d layers; single-GPU times "
          "measured (%s); collectives modelled as NCCL's alpha + (bus factor) S / beta with the published H100 "
          "NVLink alpha %s us and beta %.0f GB/s (all-reduce factor 2 (n - 1) / n; broadcast and point-to-point 1)"
          % (a.model, B, L, L * B, times[names[0]]["precision"], a.alpha_us.replace(",", " to "), a.beta_gbs))
    print("stem + head (fitted, E = 2 t(vit1) - t(vit2)): %.3f ms at batch 1, %.3f ms at batch %d; the rest runs "
          "in the branches or stages" % (rows[0]["stem_head_ms"], rows[-1]["stem_head_ms"], rows[-1]["batch"]))
    print("| batch | GPUs | branches per GPU | message | branches alone ms (measured) | branch per GPU ms | "
          "pipeline ms |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print("| %d | %d | %d%s | %.0f KB | %.3f | %s | %s |" % (r["batch"], r["gpus"], r["branches_per_gpu"],
              " (%d idle)" % r["idle_gpus"] if r["idle_gpus"] else "", r["message_bytes"] / 1e3, r["branches_ms"],
              span(r["branch_per_gpu_ms"]), span(r["pipeline_ms"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"times": times, "model": rows, "alpha_us": alphas, "beta_gbs": a.beta_gbs,
                       "note": "a model, not a measurement: collectives from NCCL's cost model with assumed "
                               "alpha and beta"}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""PyTorch <-> paraformer interop check (optional; `make test-torch`; needs PyTorch).

    /usr/bin/python3 tools/torch_interop.py [build/paraformer] [--anchor PATH] [--keep]

1. `paraformer init` for several configs (both residual forms, both aggregations,
   qkv bias on/off, both pools): each file must load into the PyTorch `Net` by
   name with strict=True (no missing/unexpected tensors, exact shapes, F32, the
   config asked for), and `paraformer predict` on a random float32 input must give
   Net's float64 logits to <= 1e-4 relative (max|a-b| / max|b|).
2. Random Nets written from PyTorch as F32 safetensors (with metadata, LayerNorm
   and cls/pos perturbed) must predict the same logits in C, for float32 NCHW
   input and for uint8 NHWC / NHW input (scaled to [0,1], normalised with the
   config's mean/std).

Prints one line per check, then `N passed, M failed`; exit status 1 on failure.
The reference `Net` comes from ../shared/anchors/torch_anchor.py (or --anchor).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (safetensors by hand, Net loading)

TOL = 1e-4
BASE = dict(image_size=16, channels=3, patch_size=4, dim=16, heads=2, mlp_dim=32, branches=3, depth=2,
            classes=10, residual="prenorm", aggregate="delta", qkv_bias=True, pool="cls")
INIT_CASES = [
    ("prenorm_delta_bias_cls", dict()),
    ("normed_sum_nobias_mean", dict(image_size=12, channels=1, patch_size=3, dim=12, heads=3, mlp_dim=24,
                                    branches=2, depth=1, classes=4, residual="normed", aggregate="sum",
                                    qkv_bias=False, pool="mean")),
    ("prenorm_sum_nobias_mean", dict(image_size=8, patch_size=2, dim=8, heads=1, mlp_dim=16, branches=4,
                                     depth=1, classes=3, aggregate="sum", qkv_bias=False, pool="mean")),
    ("normed_delta_bias_cls_vitlike", dict(image_size=28, channels=1, patch_size=7, dim=24, heads=4,
                                           mlp_dim=48, branches=1, depth=3, residual="normed", qkv_bias=True)),
    ("prenorm_delta_nobias_mean", dict(image_size=32, patch_size=4, dim=32, heads=4, mlp_dim=64, branches=2,
                                       depth=2, qkv_bias=False, pool="mean")),
]
TORCH_CASES = [
    ("normed_sum_nobias_mean+meanstd", dict(residual="normed", aggregate="sum", qkv_bias=False, pool="mean",
                                            classes=7), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]),
    ("prenorm_delta_bias_cls_1ch", dict(channels=1, image_size=12, patch_size=4, dim=12, heads=3, mlp_dim=36,
                                        branches=2, depth=2, classes=5), None, None),
    ("normed_delta_bias_cls", dict(residual="normed", qkv_bias=True, branches=4, depth=1), [0.5] * 3, [0.2] * 3),
    ("prenorm_sum_nobias_mean", dict(aggregate="sum", qkv_bias=False, pool="mean", heads=4, mlp_dim=48),
     None, None),
]


def init_args(cfg, seed):
    return ["--image-size", cfg["image_size"], "--channels", cfg["channels"], "--patch", cfg["patch_size"],
            "--dim", cfg["dim"], "--heads", cfg["heads"], "--mlp-dim", cfg["mlp_dim"],
            "--branches", cfg["branches"], "--depth", cfg["depth"], "--classes", cfg["classes"],
            "--residual", cfg["residual"], "--aggregate", cfg["aggregate"],
            "--qkv-bias", "on" if cfg["qkv_bias"] else "off", "--pool", cfg["pool"], "--seed", seed]


class Checker:
    def __init__(s, exe, tmp):
        s.exe, s.tmp, s.passed, s.failed = exe, tmp, 0, 0

    def run(s, *args):
        cmd = [s.exe] + [str(a) for a in args]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError("`%s` exited %d: %s" % (" ".join(cmd), r.returncode, r.stdout.strip()[-800:]))

    def predict(s, model, x, name):
        import numpy as np
        xp, yp = os.path.join(s.tmp, name + "_x.npy"), os.path.join(s.tmp, name + "_y.npy")
        np.save(xp, x)
        s.run("predict", "--model", model, "--input", xp, "--output", yp)
        y = np.load(yp)
        if y.dtype != np.float32:
            raise RuntimeError("predict wrote %s logits, expected float32" % y.dtype)
        return y

    def compare(s, label, ours, ref):
        import numpy as np
        if ours.shape != ref.shape:
            raise RuntimeError("logits shape %s, expected %s" % (list(ours.shape), list(ref.shape)))
        rel = float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))
        if not np.isfinite(rel) or rel > TOL:
            raise RuntimeError("logits differ: rel %.3g > %g" % (rel, TOL))
        return "rel %.2e" % rel

    def check(s, label, fn):
        try:
            msg = fn()
            s.passed += 1
            print("PASS  %-48s %s" % (label, msg), flush=True)
        except Exception as e:  # report every failure and go on
            s.failed += 1
            print("FAIL  %-48s %s" % (label, str(e).replace("\n", "\n      ")), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exe", nargs="?", default=os.path.join(mf.ROOT, "build", "paraformer"),
                    help="the paraformer program (default %(default)s)")
    ap.add_argument("--anchor", default=os.environ.get("PARAFORMER_TORCH_ANCHOR", mf.DEFAULT_ANCHOR),
                    help="torch_anchor.py holding Net (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    a = ap.parse_args()
    mf.need_torch()
    import numpy as np, torch
    torch.set_num_threads(1)
    exe = os.path.abspath(a.exe)
    if not os.access(exe, os.X_OK):
        print("error: %s not found or not executable (build it first)" % exe)
        print("0 passed, 1 failed")
        return 1
    anchor = mf.load_anchor(a.anchor)
    tmp = tempfile.mkdtemp(prefix="pf_interop_")
    c = Checker(exe, tmp)
    print("torch %s; %s; anchor %s" % (torch.__version__, exe, os.path.normpath(os.path.abspath(a.anchor))))

    # 1. C -> PyTorch
    for i, (name, over) in enumerate(INIT_CASES):
        cfg = dict(BASE, **over)

        def init_case(name=name, cfg=cfg, seed=100 + i):
            m = os.path.join(tmp, "c_%s.safetensors" % name)
            c.run("init", "--out", m, *init_args(cfg, seed))
            net, got, _ = mf.load_into_net(anchor, m, expect_dtype="F32")
            diff = ["%s=%r (asked %r)" % (k, got.get(k), cfg[k]) for k in mf.CONFIG_KEYS if got.get(k) != cfg[k]]
            if diff:
                raise RuntimeError("config in file differs: " + ", ".join(diff))
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(3, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=g).numpy()
            ref = mf.logits64(net, x.astype(np.float64))
            return "strict load ok, " + c.compare(name, c.predict(m, x, "c_" + name), ref)

        c.check("C init -> torch  %s" % name, init_case)

    # 2. PyTorch -> C
    for i, (name, over, mean, std) in enumerate(TORCH_CASES):
        cfg = dict(BASE, **over)
        m = os.path.join(tmp, "t_%s.safetensors" % name)
        torch.manual_seed(200 + i)
        net = mf.write_torch_model(anchor, cfg, m, mean, std)
        mean_, std_ = mean or [0.0] * cfg["channels"], std or [1.0] * cfg["channels"]
        n, hw, ch = 4, cfg["image_size"], cfg["channels"]
        x = torch.randn(n, ch, hw, hw).numpy()
        u8 = torch.randint(0, 256, (n, hw, hw, ch), dtype=torch.uint8).numpy()

        def f32_case(m=m, net=net, x=x, name=name):
            return c.compare(name, c.predict(m, x, "t_" + name), mf.logits64(net, x.astype(np.float64)))

        def u8_case(m=m, net=net, u8=u8, mean_=mean_, std_=std_, name=name, ch=ch):
            ref = mf.logits64(net, mf.u8_to_input(u8, mean_, std_))
            arr = u8[..., 0] if ch == 1 else u8   # one channel: the [N,H,W] form
            return c.compare(name, c.predict(m, arr, "t_%s_u8" % name), ref)

        c.check("torch -> C  %s float32" % name, f32_case)
        c.check("torch -> C  %s uint8 %s" % (name, "NHW" if ch == 1 else "NHWC"), u8_case)

    if a.keep:
        print("kept %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""PyTorch <-> paraformer interop check (optional; `make test-torch`; needs PyTorch).

    /usr/bin/python3 tools/torch_interop.py [build/paraformer] [--keep]

1. `paraformer init` for several configs (both residual forms, both aggregations,
   qkv bias on/off, both pools): each file must load into the PyTorch `Net` by
   name with strict=True (no missing/unexpected tensors, exact shapes, F32, the
   config asked for), and `paraformer predict` on a random float32 input must give
   Net's float64 logits to <= 1e-4 relative (max|a-b| / max|b|).
2. Random Nets written from PyTorch as F32 safetensors (with metadata, LayerNorm
   and cls/pos perturbed) must predict the same logits in C, for float32 NCHW
   input and for uint8 NHWC / NHW input (scaled to [0,1], normalised with the
   config's mean/std).
3. The first k branches: `predict --branches k` and `compress --keep k` (whose
   file loads strictly with branches = k) against Net on its first k branches;
   a Net written by torch_ref.save predicts the same logits in C and reads back
   exactly; a checkpoint of `paraformer train` (with its train.* state) loads
   into Net and predicts the same logits.

Prints one line per check, then `N passed, M failed`; exit status 1 on failure.
The reference `Net` is tools/torch_ref.py's. Needs PyTorch and NumPy: on
Debian, apt-get install python3-torch libopenblas0-pthread and run it with
/usr/bin/python3 (run with another Python that lacks torch, it runs itself
again under /usr/bin/python3; without torch anywhere it says what to install
and exits with status 1).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no tools/__pycache__ in the checkout
import make_fixtures as mf  # noqa: E402  (torch_ref, Net loading; exits when torch is missing)

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
        return s.predict_args(model, x, name)

    def predict_args(s, model, x, name, *extra):
        np = mf.np
        xp, yp = os.path.join(s.tmp, name + "_x.npy"), os.path.join(s.tmp, name + "_y.npy")
        np.save(xp, x)
        s.run("predict", "--model", model, "--input", xp, "--output", yp, *extra)
        y = np.load(yp)
        if y.dtype != np.float32:
            raise RuntimeError("predict wrote %s logits, expected float32" % y.dtype)
        return y

    def compare(s, label, ours, ref):
        np = mf.np
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
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    a = ap.parse_args()
    np, torch = mf.np, mf.torch
    torch.set_num_threads(1)
    exe = os.path.abspath(a.exe)
    if not os.access(exe, os.X_OK):
        print("error: %s not found or not executable (build it first)" % exe)
        print("0 passed, 1 failed")
        return 1
    tmp = tempfile.mkdtemp(prefix="pf_interop_")
    c = Checker(exe, tmp)
    print("torch %s; %s; reference %s" % (torch.__version__, exe, os.path.abspath(mf.tr.__file__)))

    # 1. C -> PyTorch
    for i, (name, over) in enumerate(INIT_CASES):
        cfg = dict(BASE, **over)

        def init_case(name=name, cfg=cfg, seed=100 + i):
            m = os.path.join(tmp, "c_%s.safetensors" % name)
            c.run("init", "--out", m, *init_args(cfg, seed))
            net, _, meta = mf.load_into_net(m, expect_dtype="F32")
            got = json.loads(meta["config"])   # as written, before any defaults
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
        net = mf.write_torch_model(cfg, m, mean, std)
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

    # 3. the first k branches, torch_ref's own save/load, a training checkpoint
    cfg = dict(BASE, residual="normed", qkv_bias=True, branches=4, depth=1)
    m = os.path.join(tmp, "k_branches.safetensors")
    torch.manual_seed(300)
    net = mf.write_torch_model(cfg, m)
    x = torch.randn(3, cfg["channels"], cfg["image_size"], cfg["image_size"]).numpy()

    def first_k(k=2):
        with torch.no_grad():
            ref = net.double()(torch.as_tensor(x).double(), active=k).numpy()
        r1 = c.compare("predict --branches", c.predict_args(m, x, "k_pred", "--branches", k), ref)
        mk = os.path.join(tmp, "k_compressed.safetensors")
        c.run("compress", "--model", m, "--keep", k, "--out", mk)
        small, scfg, _ = mf.load_into_net(mk, expect_dtype="F32")
        if scfg["branches"] != k:
            raise RuntimeError("compressed config has %d branches, expected %d" % (scfg["branches"], k))
        r2 = c.compare("compressed", mf.logits64(small, x.astype(np.float64)), ref)
        return "predict --branches %d %s; compress --keep %d loads strictly, %s" % (k, r1, k, r2)

    def ref_save_load():
        tcfg = dict(BASE, aggregate="sum", pool="mean", qkv_bias=False, branches=2)
        torch.manual_seed(301)
        ref_net = mf.randomize(mf.build_net(tcfg))    # float64 holding float32 values
        path = os.path.join(tmp, "ref_save.safetensors")
        mf.tr.save(ref_net, path)
        back, _, meta = mf.tr.load(path, dtype=torch.float64)
        bad = [k for k, v in ref_net.state_dict().items() if not torch.equal(back.state_dict()[k], v)]
        if bad:
            raise RuntimeError("torch_ref.load gives other values for %s" % ", ".join(bad[:4]))
        xs = torch.randn(3, tcfg["channels"], tcfg["image_size"], tcfg["image_size"]).numpy()
        r = c.compare("saved", c.predict(path, xs, "ref_save"), mf.logits64(ref_net, xs.astype(np.float64)))
        return "round trip exact (%s writer), C predicts it: %s" % (
            "safetensors package" if mf.tr._package() else "plain", r)

    def train_state():
        mt = os.path.join(tmp, "trained.safetensors")
        c.run("train", "--data", "fmnist:" + os.path.join(mf.ROOT, "data", "fmnist-sample") + "#limit=128",
              "--image-size", 28, "--channels", 1, "--patch", 7, "--dim", 16, "--heads", 2, "--mlp-dim", 32,
              "--branches", 2, "--depth", 1, "--classes", 10, "--epochs", 1, "--batch", 32, "--seed", 5,
              "--threads", 1, "--quiet", "--out", mt)
        extra = [k for k in mf.tr.read_header(mt) if k.startswith("train.")]
        tnet, tcfg, _ = mf.load_into_net(mt, expect_dtype="F32")
        xs = torch.randn(3, 1, 28, 28).numpy()
        r = c.compare("trained", c.predict(mt, xs, "trained"), mf.logits64(tnet, xs.astype(np.float64)))
        return "strict load ignoring %d train.* tensors, %s" % (len(extra), r)

    c.check("first k branches (predict --branches, compress)", first_k)
    c.check("torch_ref.save -> C, torch_ref.load", ref_save_load)
    if os.path.isdir(os.path.join(mf.ROOT, "data", "fmnist-sample")):
        c.check("C train checkpoint -> torch", train_state)

    if a.keep:
        print("kept %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())

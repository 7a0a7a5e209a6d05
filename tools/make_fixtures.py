#!/usr/bin/python3
"""Write the committed PyTorch reference fixtures in tests/fixtures/.

    /usr/bin/python3 tools/make_fixtures.py [--only model|interop] [--out DIR]

Needs PyTorch and NumPy (Debian: apt-get install python3-torch
libopenblas0-pthread, and run it with /usr/bin/python3; `make test` itself
never needs PyTorch). The reference model is `Net` of tools/torch_ref.py
(the folder of this script). --out DIR writes the files there instead of
tests/fixtures/ (to compare a regeneration with the committed files).

  model   : ref_<case>.safetensors, float64: the initial parameters, an input
            batch x and labels y, logits, loss, every gradient (grad.<name>),
            the losses of 5 optimizer steps and the parameters after them
            (final.<name>).
  interop : torch_model.safetensors (an F32 state_dict written here) with
            torch_input.npy / torch_logits.npy and torch_input_u8.npy /
            torch_logits_u8.npy; and, when build/paraformer exists, a model
            written by `paraformer init` (c_init.safetensors) loaded into Net
            with strict=True, with c_init_input.npy / c_init_logits.npy.

Files are written by torch_ref.write_safetensors (plain Python, not the
`safetensors` package: the bytes depend only on the tensors). Output is
deterministic: fixed seeds, one thread, and OPENBLAS_CORETYPE=Prescott (set
here, before torch loads), OpenBLAS's generic x86-64 kernels, so that the
float64 results do not depend on the CPU's vector unit. With Debian 12's
python3-torch 1.13 and OpenBLAS 0.3.21 this regenerates the committed files
bit for bit; another PyTorch or BLAS may change the last bits of the
float64 results (about 1e-15 relative in logits and gradients, 1e-11 in
the parameters after the optimizer steps).
tools/torch_interop.py imports the helpers below.
"""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no tools/__pycache__ in the checkout
# OpenBLAS's generic kernels (read when the library loads, so before torch):
# the same float64 bits on any x86-64 CPU
os.environ["OPENBLAS_CORETYPE"] = "Prescott"
try:
    import torch_ref as tr  # re-runs this script under /usr/bin/python3 when this Python lacks torch
    import torch
    import torch.nn.functional as F
except ImportError as e:
    sys.exit("error: %s" % e)
try:
    import numpy as np
except ImportError:
    sys.exit("error: NumPy is not importable from %s: apt-get install python3-numpy (Debian), "
             "or pip install numpy" % sys.executable)

CONFIG_KEYS = tr.CONFIG_KEYS


# ---------------------------------------------------------------------------
# the reference model

def build_net(cfg):
    """Net from a paraformer config dict (the checkpoint's __metadata__ config)."""
    return tr.Net(cfg)


def f32round(t):
    return t.float().double()


def randomize(net, cls_pos_std=0.5):
    """Make every parameter float32-representable (net becomes float64), move
    LayerNorm affine away from 1/0 and enlarge cls/pos so every path matters."""
    net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(f32round(p))
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(f32round(1 + 0.1 * torch.randn_like(m.weight)))
                m.bias.copy_(f32round(0.1 * torch.randn_like(m.bias)))
        net.embed.cls.copy_(f32round(cls_pos_std * torch.randn_like(net.embed.cls)))
        net.embed.pos.copy_(f32round(cls_pos_std * torch.randn_like(net.embed.pos)))
    return net


def load_into_net(path, expect_dtype=None):
    """Load a paraformer safetensors checkpoint into a float64 Net by name with
    strict=True; shapes must match exactly, and with expect_dtype every model
    tensor must be stored as that dtype. Returns (net, cfg, meta)."""
    net, cfg, meta = tr.load(path, dtype=torch.float64)
    if expect_dtype:
        hdr = tr.read_header(path)
        errs = ["tensor %s is %s, expected %s" % (k, e["dtype"], expect_dtype) for k, e in hdr.items()
                if k != "__metadata__" and not k.startswith("train.") and e["dtype"] != expect_dtype]
        if errs:
            raise ValueError("%s:\n  %s" % (path, "\n  ".join(errs)))
    return net, cfg, meta


def logits64(net, x):
    with torch.no_grad():
        return net.double()(torch.as_tensor(x).double()).numpy()


def u8_to_input(u8, mean, std):
    """uint8 [N,H,W,C] -> normalised float64 [N,C,H,W] as `predict` does."""
    v = u8.astype(np.float64) / 255.0
    v = v.transpose(0, 3, 1, 2)
    return (v - np.asarray(mean, np.float64)[None, :, None, None]) / np.asarray(std, np.float64)[None, :, None, None]


# ---------------------------------------------------------------------------
# Part 1: whole-model reference fixtures

TINY = dict(image_size=12, channels=3, patch_size=4, dim=12, heads=3, mlp_dim=24, branches=3, depth=2, classes=5)

# name: residual, aggregate, qkv_bias, pool, active, optim, label_smoothing, clip, weight_decay, overrides
CASES = [
    ("prenorm_delta_bias_cls", "prenorm", "delta", True, "cls", 3, "adamw", 0.0, 0.0, 0.1, {}),
    ("prenorm_sum_nobias_mean", "prenorm", "sum", False, "mean", 3, "adamw", 0.1, 0.5, 0.05, {}),
    ("normed_delta_nobias_cls_k2", "normed", "delta", False, "cls", 2, "adamw", 0.0, 1.0, 0.1, {}),
    ("normed_sum_bias_mean", "normed", "sum", True, "mean", 3, "adamw", 0.1, 0.0, 0.1, {}),
    ("prenorm_delta_bias_mean_k1_adam", "prenorm", "delta", True, "mean", 1, "adam", 0.0, 0.0, 0.01, {}),
    ("normed_sum_nobias_cls_paper", "normed", "sum", False, "cls", 3, "adam", 0.1, 1.0, 0.0, {}),
    ("vit_prenorm", "prenorm", "delta", True, "cls", 1, "adamw", 0.0, 0.0, 0.1, dict(branches=1, depth=3)),
]
BATCH, STEPS, LR, BETA1, BETA2, EPS = 3, 5, 1e-3, 0.9, 0.999, 1e-8
DECAYED = ("proj.weight", "qkv.weight", "fc1.weight", "fc2.weight", "head.weight")


def make_optimizer(net, optim, wd):
    import inspect
    decay = [p for n, p in net.named_parameters() if n.endswith(DECAYED)]
    rest = [p for n, p in net.named_parameters() if not n.endswith(DECAYED)]
    cls = torch.optim.AdamW if optim == "adamw" else torch.optim.Adam
    kw = dict(lr=LR, betas=(BETA1, BETA2), eps=EPS)
    if "foreach" in inspect.signature(cls.__init__).parameters:
        kw["foreach"] = False
    return cls([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], **kw)


def show(path):
    """A written file's name for the log: relative to the repository when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def model_case(out_dir, seed, case):
    name, residual, aggregate, qkv_bias, pool, active, optim, ls, clip, wd, over = case
    cfg = dict(TINY, **over)
    cfg.update(residual=residual, aggregate=aggregate, qkv_bias=qkv_bias, pool=pool)
    torch.manual_seed(seed)
    net = randomize(build_net(cfg))
    net.active = active
    x = f32round(torch.randn(BATCH, cfg["channels"], cfg["image_size"], cfg["image_size"], dtype=torch.float64))
    y = torch.randint(0, cfg["classes"], (BATCH,))

    init = [(k, v.clone()) for k, v in net.state_dict().items()]
    logits = net(x)
    loss = F.cross_entropy(logits, y, label_smoothing=ls)
    loss.backward()
    grads = [("grad." + n, p.grad.clone()) for n, p in net.named_parameters() if p.grad is not None]
    net.zero_grad(set_to_none=True)

    opt = make_optimizer(net, optim, wd)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        l = F.cross_entropy(net(x), y, label_smoothing=ls)
        l.backward()
        losses.append(l.item())
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], clip)
        opt.step()
    final = [("final." + k, v.clone()) for k, v in net.state_dict().items()]

    tensors = init + [("x", x), ("y", y.double()), ("logits", logits.detach()), ("loss", loss.detach().reshape(1))]
    tensors += grads + [("losses", torch.tensor(losses, dtype=torch.float64))] + final
    test = dict(batch=BATCH, active=active, optim=optim, lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS,
                weight_decay=wd, clip=clip, label_smoothing=ls, steps=STEPS)
    meta = {"format": "paraformer", "format_version": "1",
            "config": json.dumps({k: cfg[k] for k in CONFIG_KEYS}), "test": json.dumps(test)}
    path = os.path.join(out_dir, "ref_%s.safetensors" % name)
    tr.write_safetensors(path, tensors, meta, "F64")

    # read back and compare every tensor bit for bit
    back, bmeta = tr.read_safetensors(path)
    assert bmeta == meta, "metadata round trip"
    assert list(back) == [n for n, _ in tensors], "tensor order round trip"
    for n, t in tensors:
        t = t.detach()
        assert back[n].dtype == torch.float64 and back[n].shape == t.shape and torch.equal(back[n], t.double()), n
    print("  %-36s loss %.6f -> %.6f  %2d grads  %7d bytes" % (
        show(path), loss.item(), losses[-1], len(grads), os.path.getsize(path)))


def part_model(out_dir):
    print("model fixtures:")
    for i, case in enumerate(CASES):
        model_case(out_dir, 1000 + i, case)


# ---------------------------------------------------------------------------
# Part 2: interop fixtures

TORCH_CFG = dict(image_size=16, channels=3, patch_size=4, dim=16, heads=2, mlp_dim=32, branches=3, depth=2,
                 classes=7, residual="normed", aggregate="sum", qkv_bias=False, pool="mean")
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
C_INIT_ARGS = ["--image-size", "16", "--channels", "1", "--patch", "4", "--dim", "16", "--heads", "4",
               "--mlp-dim", "48", "--branches", "2", "--depth", "2", "--classes", "6", "--residual", "prenorm",
               "--aggregate", "delta", "--qkv-bias", "on", "--pool", "cls", "--seed", "11"]


def write_torch_model(cfg, path, mean=None, std=None):
    """Random Net (LayerNorm perturbed, cls/pos enlarged) saved as F32 safetensors
    with paraformer metadata; returns the float64 net holding the F32 values."""
    net = randomize(build_net(cfg))
    c = {k: cfg[k] for k in CONFIG_KEYS}
    if mean is not None:
        c.update(mean=mean, std=std)
    meta = {"format": "paraformer", "format_version": "1", "config": json.dumps(c)}
    tr.write_safetensors(path, list(net.state_dict().items()), meta, "F32")
    return net


def part_interop(out_dir, exe):
    print("interop fixtures:")
    torch.manual_seed(2024)
    path = os.path.join(out_dir, "torch_model.safetensors")
    write_torch_model(TORCH_CFG, path, MEAN, STD)
    net, cfg, _ = load_into_net(path, expect_dtype="F32")   # round trip through the file
    x = torch.randn(5, 3, 16, 16).numpy()
    u8 = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8).numpy()
    out = {"torch_input.npy": x.astype(np.float32), "torch_logits.npy": logits64(net, x.astype(np.float64)),
           "torch_input_u8.npy": u8, "torch_logits_u8.npy": logits64(net, u8_to_input(u8, MEAN, STD))}
    for n, a in out.items():
        np.save(os.path.join(out_dir, n), a)
    for n in ["torch_model.safetensors"] + list(out):
        print("  %-36s %7d bytes" % (show(os.path.join(out_dir, n)), os.path.getsize(os.path.join(out_dir, n))))

    if not os.access(exe, os.X_OK):
        print("  NOTE: %s not found; skipped c_init.safetensors (`make build/paraformer`, then rerun "
              "`/usr/bin/python3 tools/make_fixtures.py --only interop`)" % show(exe))
        return
    cpath = os.path.join(out_dir, "c_init.safetensors")
    cmd = [exe, "init", "--out", cpath] + C_INIT_ARGS
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        sys.exit("error: `%s` exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout))
    try:
        net, cfg, _ = load_into_net(cpath, expect_dtype="F32")
    except ValueError as e:
        sys.exit("error: the model written by `paraformer init` does not load into PyTorch's Net:\n%s" % e)
    torch.manual_seed(11)
    xi = torch.randn(4, cfg["channels"], cfg["image_size"], cfg["image_size"]).numpy().astype(np.float32)
    np.save(os.path.join(out_dir, "c_init_input.npy"), xi)
    np.save(os.path.join(out_dir, "c_init_logits.npy"), logits64(net, xi.astype(np.float64)))
    for n in ("c_init.safetensors", "c_init_input.npy", "c_init_logits.npy"):
        print("  %-36s %7d bytes" % (show(os.path.join(out_dir, n)), os.path.getsize(os.path.join(out_dir, n))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["model", "interop"], help="write only one part")
    p.add_argument("--out", default=FIXTURES, help="output folder (default tests/fixtures)")
    p.add_argument("--exe", default=os.path.join(ROOT, "build", "paraformer"),
                   help="the program that writes c_init.safetensors (default build/paraformer)")
    a = p.parse_args()
    torch.set_num_threads(1)
    out_dir = os.path.abspath(a.out)
    os.makedirs(out_dir, exist_ok=True)
    print("torch %s, reference %s, writing to %s" % (torch.__version__, show(os.path.abspath(tr.__file__)), show(out_dir)))
    if a.only in (None, "model"):
        part_model(out_dir)
    if a.only in (None, "interop"):
        part_interop(out_dir, os.path.abspath(a.exe))
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print("%s: %d bytes in all" % (show(out_dir), total))


if __name__ == "__main__":
    main()

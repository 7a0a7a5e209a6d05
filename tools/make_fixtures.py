#!/usr/bin/python3
"""Write the committed PyTorch reference fixtures in tests/fixtures/.

    /usr/bin/python3 tools/make_fixtures.py [--anchor PATH] [--only model|interop]

Needs PyTorch and NumPy (Debian's python3-torch: run it with /usr/bin/python3;
`make test` itself never needs PyTorch). The reference model is `Net` from
../shared/anchors/torch_anchor.py (override with --anchor), loaded by path.

  model   : tests/fixtures/ref_<case>.safetensors, float64: the initial
            parameters, an input batch x and labels y, logits, loss, every
            gradient (grad.<name>), the losses of 5 optimizer steps and the
            parameters after them (final.<name>).
  interop : torch_model.safetensors (an F32 state_dict written here) with
            torch_input.npy / torch_logits.npy and torch_input_u8.npy /
            torch_logits_u8.npy; and, when build/paraformer exists, a model
            written by `paraformer init` (c_init.safetensors) loaded into Net
            with strict=True, with c_init_input.npy / c_init_logits.npy.

No `safetensors` package is used: files are written and read by hand (8-byte
little-endian header length, space-padded JSON header, raw little-endian data).
tools/torch_interop.py imports the helpers below.
"""
import argparse, importlib.util, json, os, struct, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ANCHOR = os.path.join(ROOT, "..", "shared", "anchors", "torch_anchor.py")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def need_torch():
    """Import torch, re-running this script under /usr/bin/python3 when the
    interpreter on PATH lacks it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        alt = "/usr/bin/python3"
        if os.path.exists(alt) and os.path.realpath(sys.executable) != os.path.realpath(alt) \
                and not os.environ.get("PF_REEXEC"):
            os.environ["PF_REEXEC"] = "1"
            os.execv(alt, [alt] + sys.argv)
        sys.exit("error: PyTorch is not importable from %s; run this with /usr/bin/python3 "
                 "(Debian python3-torch) or a Python that has torch and numpy" % sys.executable)


# ---------------------------------------------------------------------------
# safetensors by hand

_DT = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "I64": ("<i8", 8),
       "I32": ("<i4", 4), "U8": ("|u1", 1), "I8": ("|i1", 1)}


def write_safetensors(path, tensors, metadata, dtype="F64"):
    """tensors: list of (name, array-like) in file order; metadata: dict str->str.
    Every tensor is stored as `dtype`. Written to a temporary file, then renamed."""
    import numpy as np
    npdt = _DT[dtype][0]
    header, blobs, off = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}, [], 0
    seen = set()
    for name, t in tensors:
        if name in seen:
            raise ValueError("duplicate tensor name %r" % name)
        seen.add(name)
        if hasattr(t, "detach"):
            t = t.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(t), dtype=npdt)
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-(8 + len(h))) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Returns (dict name -> numpy array, in file order, metadata dict).
    Validates the header strictly and fails with a message naming the file."""
    import numpy as np
    with open(path, "rb") as f:
        buf = f.read()

    def bad(msg):
        raise ValueError("%s: %s" % (path, msg))

    if len(buf) < 8:
        bad("shorter than the 8-byte header length")
    n = struct.unpack("<Q", buf[:8])[0]
    if n > len(buf) - 8:
        bad("header length %d exceeds the file size %d" % (n, len(buf)))
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        bad("header is not JSON (%s)" % e)
    if not isinstance(header, dict):
        bad("header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        bad("__metadata__ must map strings to strings")
    data = memoryview(buf)[8 + n:]
    out, spans = {}, []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            bad("tensor %r: entry must have exactly dtype, shape, data_offsets" % name)
        if e["dtype"] not in _DT:
            bad("tensor %r: unsupported dtype %r" % (name, e["dtype"]))
        npdt, size = _DT[e["dtype"]]
        shape = e["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            bad("tensor %r: bad shape %r" % (name, shape))
        b, end = e["data_offsets"]
        count = 1
        for d in shape:
            count *= d
        if not (0 <= b <= end <= len(data)):
            bad("tensor %r: data_offsets %r outside the %d data bytes" % (name, [b, end], len(data)))
        if end - b != count * size:
            bad("tensor %r: %d bytes for shape %r %s" % (name, end - b, shape, e["dtype"]))
        spans.append((b, end, name))
        out[name] = np.frombuffer(data[b:end], dtype=npdt).reshape(shape).copy()
    spans.sort()
    pos = 0
    for b, end, name in spans:
        if b != pos:
            bad("tensor %r: data not contiguous (starts at %d, expected %d)" % (name, b, pos))
        pos = end
    if pos != len(data):
        bad("%d trailing bytes after the last tensor" % (len(data) - pos))
    return out, meta


# ---------------------------------------------------------------------------
# the reference model

def load_anchor(path):
    path = os.path.abspath(path)
    if not os.path.exists(path):
        sys.exit("error: anchor %s not found (give --anchor PATH to torch_anchor.py)" % path)
    spec = importlib.util.spec_from_file_location("torch_anchor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONFIG_KEYS = ("image_size", "channels", "patch_size", "dim", "heads", "mlp_dim",
               "branches", "depth", "classes", "residual", "aggregate", "qkv_bias", "pool")


def build_net(anchor, cfg):
    """Net from a paraformer config dict (the checkpoint's __metadata__ config)."""
    residual = cfg.get("residual", "prenorm")
    if residual not in ("prenorm", "normed"):
        raise ValueError("config residual %r is not prenorm|normed" % residual)
    return anchor.Net(cfg["image_size"], cfg["channels"], cfg["patch_size"], cfg["dim"], cfg["heads"], 1,
                      cfg["branches"], cfg["depth"], cfg["classes"],
                      variant="paper" if residual == "normed" else "standard",
                      aggregate=cfg.get("aggregate", "delta"), pool=cfg.get("pool", "cls"),
                      qkv_bias=bool(cfg.get("qkv_bias", residual == "prenorm")), mlp_dim=cfg["mlp_dim"])


def f32round(t):
    return t.float().double()


def randomize(net, cls_pos_std=0.5):
    """Make every parameter float32-representable (net becomes float64), move
    LayerNorm affine away from 1/0 and enlarge cls/pos so every path matters."""
    import torch
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


def load_into_net(anchor, path, expect_dtype=None):
    """Load a paraformer safetensors checkpoint into a float64 Net by name with
    strict=True; shapes must match exactly. Returns (net, cfg, meta)."""
    import torch
    tensors, meta = read_safetensors(path)
    if meta.get("format") != "paraformer":
        raise ValueError("%s: __metadata__ format is %r, expected 'paraformer'" % (path, meta.get("format")))
    if "config" not in meta:
        raise ValueError("%s: no config in __metadata__" % path)
    cfg = json.loads(meta["config"])
    missing = [k for k in CONFIG_KEYS if k not in cfg and k not in ("residual", "aggregate", "qkv_bias", "pool")]
    if missing:
        raise ValueError("%s: config lacks %s" % (path, ", ".join(missing)))
    net = build_net(anchor, cfg).double()
    model = {k: v for k, v in tensors.items() if not k.startswith("train.")}
    ref = net.state_dict()
    errs = []
    for k in ref:
        if k not in model:
            errs.append("missing tensor %s %s" % (k, list(ref[k].shape)))
        elif tuple(model[k].shape) != tuple(ref[k].shape):
            errs.append("tensor %s has shape %s, Net expects %s" % (k, list(model[k].shape), list(ref[k].shape)))
    for k in model:
        if k not in ref:
            errs.append("unexpected tensor %s %s" % (k, list(model[k].shape)))
    if expect_dtype:
        hdr = _header(path)
        for k in model:
            if hdr[k]["dtype"] != expect_dtype:
                errs.append("tensor %s is %s, expected %s" % (k, hdr[k]["dtype"], expect_dtype))
    if errs:
        raise ValueError("%s does not load into Net:\n  %s" % (path, "\n  ".join(errs)))
    net.load_state_dict({k: torch.from_numpy(v.astype("float64")) for k, v in model.items()}, strict=True)
    return net, cfg, meta


def _header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def logits64(net, x):
    import torch
    with torch.no_grad():
        return net.double()(torch.as_tensor(x).double()).numpy()


def u8_to_input(u8, mean, std):
    """uint8 [N,H,W,C] -> normalised float64 [N,C,H,W] as `predict` does."""
    import numpy as np
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
    import inspect, torch
    decay = [p for n, p in net.named_parameters() if n.endswith(DECAYED)]
    rest = [p for n, p in net.named_parameters() if not n.endswith(DECAYED)]
    cls = torch.optim.AdamW if optim == "adamw" else torch.optim.Adam
    kw = dict(lr=LR, betas=(BETA1, BETA2), eps=EPS)
    if "foreach" in inspect.signature(cls.__init__).parameters:
        kw["foreach"] = False
    return cls([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], **kw)


def model_case(anchor, seed, case):
    import torch
    import torch.nn.functional as F
    name, residual, aggregate, qkv_bias, pool, active, optim, ls, clip, wd, over = case
    cfg = dict(TINY, **over)
    cfg.update(residual=residual, aggregate=aggregate, qkv_bias=qkv_bias, pool=pool)
    torch.manual_seed(seed)
    net = randomize(build_net(anchor, cfg))
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
    path = os.path.join(FIXTURES, "ref_%s.safetensors" % name)
    write_safetensors(path, tensors, meta, "F64")

    # read back and compare every tensor bit for bit
    back, bmeta = read_safetensors(path)
    assert bmeta == meta, "metadata round trip"
    assert list(back) == [n for n, _ in tensors], "tensor order round trip"
    for n, t in tensors:
        a = t.detach().numpy() if hasattr(t, "detach") else t
        assert back[n].dtype.str == "<f8" and back[n].shape == a.shape and (back[n] == a).all(), n
    print("  %-36s loss %.6f -> %.6f  %2d grads  %7d bytes" % (
        os.path.relpath(path, ROOT), loss.item(), losses[-1], len(grads), os.path.getsize(path)))


def part_model(anchor):
    print("model fixtures:")
    for i, case in enumerate(CASES):
        model_case(anchor, 1000 + i, case)


# ---------------------------------------------------------------------------
# Part 2: interop fixtures

TORCH_CFG = dict(image_size=16, channels=3, patch_size=4, dim=16, heads=2, mlp_dim=32, branches=3, depth=2,
                 classes=7, residual="normed", aggregate="sum", qkv_bias=False, pool="mean")
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
C_INIT_ARGS = ["--image-size", "16", "--channels", "1", "--patch", "4", "--dim", "16", "--heads", "4",
               "--mlp-dim", "48", "--branches", "2", "--depth", "2", "--classes", "6", "--residual", "prenorm",
               "--aggregate", "delta", "--qkv-bias", "on", "--pool", "cls", "--seed", "11"]


def write_torch_model(anchor, cfg, path, mean=None, std=None):
    """Random Net (LayerNorm perturbed, cls/pos enlarged) saved as F32 safetensors
    with paraformer metadata; returns the float64 net holding the F32 values."""
    net = randomize(build_net(anchor, cfg))
    c = {k: cfg[k] for k in CONFIG_KEYS}
    if mean is not None:
        c.update(mean=mean, std=std)
    meta = {"format": "paraformer", "format_version": "1", "config": json.dumps(c)}
    write_safetensors(path, list(net.state_dict().items()), meta, "F32")
    return net


def part_interop(anchor):
    import numpy as np, torch
    print("interop fixtures:")
    torch.manual_seed(2024)
    path = os.path.join(FIXTURES, "torch_model.safetensors")
    write_torch_model(anchor, TORCH_CFG, path, MEAN, STD)
    net, cfg, _ = load_into_net(anchor, path, expect_dtype="F32")   # round trip through the file
    x = torch.randn(5, 3, 16, 16).numpy()
    u8 = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8).numpy()
    out = {"torch_input.npy": x.astype(np.float32), "torch_logits.npy": logits64(net, x.astype(np.float64)),
           "torch_input_u8.npy": u8, "torch_logits_u8.npy": logits64(net, u8_to_input(u8, MEAN, STD))}
    for n, a in out.items():
        np.save(os.path.join(FIXTURES, n), a)
    for n in ["torch_model.safetensors"] + list(out):
        print("  %-36s %7d bytes" % ("tests/fixtures/" + n, os.path.getsize(os.path.join(FIXTURES, n))))

    exe = os.path.join(ROOT, "build", "paraformer")
    if not os.access(exe, os.X_OK):
        print("  NOTE: build/paraformer not found; skipped c_init.safetensors (build it, then rerun "
              "`/usr/bin/python3 tools/make_fixtures.py --only interop`)")
        return
    cpath = os.path.join(FIXTURES, "c_init.safetensors")
    cmd = [exe, "init", "--out", cpath] + C_INIT_ARGS
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        sys.exit("error: `%s` exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout))
    try:
        net, cfg, _ = load_into_net(anchor, cpath, expect_dtype="F32")
    except ValueError as e:
        sys.exit("error: the model written by `paraformer init` does not load into PyTorch's Net:\n%s" % e)
    torch.manual_seed(11)
    xi = torch.randn(4, cfg["channels"], cfg["image_size"], cfg["image_size"]).numpy().astype(np.float32)
    np.save(os.path.join(FIXTURES, "c_init_input.npy"), xi)
    np.save(os.path.join(FIXTURES, "c_init_logits.npy"), logits64(net, xi.astype(np.float64)))
    for n in ("c_init.safetensors", "c_init_input.npy", "c_init_logits.npy"):
        print("  %-36s %7d bytes" % ("tests/fixtures/" + n, os.path.getsize(os.path.join(FIXTURES, n))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchor", default=DEFAULT_ANCHOR, help="path to torch_anchor.py (default %(default)s)")
    p.add_argument("--only", choices=["model", "interop"], help="write only one part")
    a = p.parse_args()
    need_torch()
    import torch
    torch.set_num_threads(1)
    anchor = load_anchor(a.anchor)
    os.makedirs(FIXTURES, exist_ok=True)
    print("torch %s, anchor %s" % (torch.__version__, os.path.normpath(os.path.abspath(a.anchor))))
    if a.only in (None, "model"):
        part_model(anchor)
    if a.only in (None, "interop"):
        part_interop(anchor)
    total = sum(os.path.getsize(os.path.join(FIXTURES, f)) for f in os.listdir(FIXTURES))
    print("tests/fixtures: %d bytes in all" % total)


if __name__ == "__main__":
    main()

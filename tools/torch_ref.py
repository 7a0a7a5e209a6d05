#!/usr/bin/python3
"""torch_ref.py - the PyTorch reference model of ParaFormer-C.

ParaFormer (Wang, Wei, Li, arXiv 2510.15425) is a Vision Transformer whose
layers are arranged as `branches` parallel stacks of `depth` layers. This file
writes the model paraformer.h computes in plain PyTorch, with the same tensor
names and shapes, so that a checkpoint written by `paraformer` loads into
`Net` with strict=True and one saved here loads there. The tests
(tools/torch_interop.py, `make test-torch`) and the committed fixtures
(tools/make_fixtures.py) use it as the reference; the benchmarks
(tools/bench_compare.py, tools/gpu_bench.py) run it as PyTorch's side.

The model, input x [N,C,H,W] (already normalised), patch P, width D, heads h,
T = (H/P)(W/P) + 1 tokens:

    X0  = [cls ; patches(x) Wp^T + bp] + pos            [N, T, D]
    B_b = L_{b,depth} o ... o L_{b,1} (X0)              b = 0 .. branches-1
    agg = X0 + sum_b (B_b - X0)        aggregate "delta" (default)
        | sum_b B_b                    aggregate "sum"   (the authors' code)
    out = head(LN(pool(agg)))          pool "cls": token 0 | "mean": all T tokens

  a layer (residual "prenorm", default | "normed", the authors' code):
    prenorm:  x = x + Attn(LN1 x);        x = x + MLP(LN2 x)
    normed:   x = LN1 x + Attn(LN1 x);    x = LN2 x + MLP(LN2 x)
  Attn: [q k v] = x Wqkv^T (+ bqkv when qkv_bias), per head
        softmax(q k^T / sqrt(D/h)) v, heads concatenated, proj (with bias)
  MLP:  fc2(GELU(fc1 x)), GELU the exact (erf) one; LayerNorm eps 1e-5
  dropout (training only, when the config's rate is > 0): `emb_dropout` on X0,
        `dropout` after the attention projection, after GELU, after fc2

Patches are flattened in (c, py, px) order, so embed.proj.weight is
[D, C*P*P]; qkv rows are q, then k, then v, heads contiguous inside each.
With one branch, prenorm and delta the model is a standard pre-LN ViT.

Checkpoints are safetensors files whose `__metadata__` holds
"format": "paraformer" and "config", a JSON object with image_size, channels,
patch_size, dim, heads, mlp_dim, branches, depth, classes, residual,
aggregate, qkv_bias, pool (and optionally dropout, emb_dropout, mean, std,
format_version). Tensors named `train.*` (the training state of a resumable
run) are ignored. The `safetensors` package is used when it is importable;
otherwise the small reader and writer below (plain Python and torch) do it.

As a library (put tools/ on sys.path):

    import torch_ref as tr
    net, cfg, meta = tr.load("model.safetensors")      # strict; float32
    logits = net(x)                                    # eval mode
    net.active = 2                                     # only the first 2 branches
    tr.save(net, "copy.safetensors")
    net = tr.Net(tr.make_config(branches=2, depth=3, dim=128, heads=4))

As a program: the models timed the way a PyTorch user runs them (training
step = forward + backward + AdamW; inference at a large batch; batch-1
latency; medians over timed repeats after untimed warm-up ones):

    /usr/bin/python3 tools/torch_ref.py --device cpu --threads 2 --models vit12,pf4x3 --quick
    python3 tools/torch_ref.py --device cuda --compile --json out.json

Model names (the same as `paraformer bench --zoo`): pfBxL = PF(BxL) = B
branches of L layers each (pf4x3: 4 branches of 3 layers), vitN = one branch
of N layers. The standard configurations: vit12 and pf4x3 at width 192 on
32x32x3 (--dataset cifar, the default), pf2x3 at width 128 with 4 heads on
28x28x1 (--dim 128 --heads 4 --dataset fmnist); patch 4, MLP 4 x width.
It prints one JSON line describing the setup (torch, device, gpu, threads,
batch), then one per model: model, params, the architecture, and
train_img_s[TAG], infer_img_s[TAG], latency_b1_ms[TAG] for TAG fp32 (and
bf16 autocast on CUDA, or on the CPU with --bf16; +compile with --compile,
+streams: one CUDA stream per branch).
"""
import argparse
import collections
import contextlib
import ctypes
import json
import math
import os
import statistics
import struct
import sys
import time

INSTALL_HINT = ("on Debian/Ubuntu: apt-get install python3-torch libopenblas0-pthread, then use "
                "/usr/bin/python3; elsewhere: pip install torch numpy")


def _torch_missing(err):
    """PyTorch cannot be imported by this Python. When the program being run is
    one of the tools beside this file and /usr/bin/python3 (Debian's, where
    python3-torch installs) is another interpreter, run it again there;
    otherwise raise an ImportError that says what to install."""
    alt = "/usr/bin/python3"
    main = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    here = os.path.dirname(os.path.abspath(__file__))
    if (main.endswith(".py") and os.path.dirname(main) == here and os.path.exists(alt)
            and os.path.realpath(sys.executable) != os.path.realpath(alt) and not os.environ.get("PF_REEXEC")):
        os.environ["PF_REEXEC"] = "1"
        sys.stdout.flush()
        os.execv(alt, [alt] + sys.argv)
    raise ImportError("PyTorch is not importable from %s (%s): %s" % (sys.executable, err, INSTALL_HINT))


try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except (ImportError, OSError) as _err:  # OSError: a shared library of torch is missing
    if __name__ == "__main__":
        try:
            _torch_missing(_err)
        except ImportError as e:
            sys.exit("error: %s" % e)
    _torch_missing(_err)


# ---------------------------------------------------------------------------
# configuration

# the keys every checkpoint config has (in the order paraformer writes them)
CONFIG_KEYS = ("image_size", "channels", "patch_size", "dim", "heads", "mlp_dim",
               "branches", "depth", "classes", "residual", "aggregate", "qkv_bias", "pool")
# defaults of paraformer.h's pf_config (mlp_dim None: 4 x dim)
DEFAULTS = dict(image_size=32, channels=3, patch_size=4, dim=192, heads=3, mlp_dim=None,
                branches=4, depth=3, classes=10, residual="prenorm", aggregate="delta", qkv_bias=True,
                pool="cls", dropout=0.0, emb_dropout=0.0)
CHOICES = dict(residual=("prenorm", "normed"), aggregate=("delta", "sum"), pool=("cls", "mean"))


def _as_bool(v, key):
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "on", "1", "yes", "false", "off", "0", "no"):
        return v.lower() in ("true", "on", "1", "yes")
    raise ValueError("config: %s must be a boolean, got %r" % (key, v))


def make_config(cfg=None, **over):
    """A complete, checked config dict: `cfg` (e.g. a checkpoint's config)
    updated with `over`, missing keys taking paraformer's defaults. mean/std
    and unknown keys are kept as they are."""
    c = dict(DEFAULTS)
    c.update(cfg or {})
    c.update(over)
    for k in ("dropout", "emb_dropout"):
        c[k] = float(c[k] or 0.0)
    if c["mlp_dim"] is None:
        c["mlp_dim"] = 4 * int(c["dim"])
    for k in ("image_size", "channels", "patch_size", "dim", "heads", "mlp_dim", "branches", "depth", "classes"):
        if isinstance(c[k], bool) or not isinstance(c[k], int) or c[k] <= 0:
            raise ValueError("config: %s must be a positive integer, got %r" % (k, c[k]))
    for k, ok in CHOICES.items():
        if c[k] not in ok:
            raise ValueError("config: %s %r is not %s" % (k, c[k], " or ".join(ok)))
    c["qkv_bias"] = _as_bool(c["qkv_bias"], "qkv_bias")
    if c["image_size"] % c["patch_size"]:
        raise ValueError("config: image_size %d is not a multiple of patch_size %d" % (c["image_size"], c["patch_size"]))
    if c["dim"] % c["heads"]:
        raise ValueError("config: dim %d is not a multiple of heads %d" % (c["dim"], c["heads"]))
    for k in ("dropout", "emb_dropout"):
        if not 0.0 <= c[k] < 1.0:
            raise ValueError("config: %s %g must be in [0, 1)" % (k, c[k]))
    return c


def tokens(cfg):
    """T = (image/patch)^2 + 1 (the cls token)."""
    g = cfg["image_size"] // cfg["patch_size"]
    return g * g + 1


def parse_zoo(name):
    """'pfBxL' -> (B, L): B branches of L layers (pf4x3: 4 branches of 3 layers);
    'vitN' -> (1, N). ValueError for anything else."""
    try:
        if name.startswith("vit"):
            b, l = 1, int(name[3:])
        elif name.startswith("pf") and "x" in name:
            b, l = (int(s) for s in name[2:].split("x"))
        else:
            raise ValueError
        if not name[-1].isdigit() or b < 1 or l < 1:
            raise ValueError
    except ValueError:
        raise ValueError("model %r is not vitN or pfBxL (B branches of L layers: vit12, pf4x3, pf2x3)" % name)
    return b, l


def zoo_name(branches, depth):
    """The inverse of parse_zoo: (1, 12) -> 'vit12', (4, 3) -> 'pf4x3'."""
    return "vit%d" % depth if branches == 1 else "pf%dx%d" % (branches, depth)


# ---------------------------------------------------------------------------
# the model

def _dropout(x, p, training):
    return F.dropout(x, p, training) if p > 0.0 and training else x


class Embed(nn.Module):
    """X0 = [cls ; patches(x) Wp^T + bp] + pos. Parameters cls [1,1,D] and
    pos [1,T,D], drawn N(0, embed_std^2); proj: Linear(C*P*P -> D)."""

    def __init__(self, cfg, embed_std=0.02):
        super().__init__()
        c, p, d = cfg["channels"], cfg["patch_size"], cfg["dim"]
        self.patch = p
        self.proj = nn.Linear(c * p * p, d)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * embed_std)
        self.pos = nn.Parameter(torch.randn(1, tokens(cfg), d) * embed_std)

    def forward(self, x):
        n, c, h, w = x.shape
        p = self.patch
        gh, gw = h // p, w // p
        # [N,C,gh,P,gw,P] -> [N,gh,gw,C,P,P]: one row per patch, (c, py, px) inside
        patches = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)
        return torch.cat([self.cls.expand(n, -1, -1), self.proj(patches)], 1) + self.pos


class Layer(nn.Module):
    """One transformer layer: attention, then MLP, each with its residual
    form. (The LayerNorms are created first: that is their place in the
    state_dict, and in the files.)"""

    def __init__(self, cfg, fused_attention=False):
        super().__init__()
        d, m = cfg["dim"], cfg["mlp_dim"]
        self.ln1 = nn.LayerNorm(d, eps=1e-5)
        self.ln2 = nn.LayerNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=cfg["qkv_bias"])
        self.proj = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, m)
        self.fc2 = nn.Linear(m, d)
        self.heads = cfg["heads"]
        self.normed = cfg["residual"] == "normed"
        self.p = cfg["dropout"]
        self.fused_attention = fused_attention

    def attention(self, u):
        n, t, d = u.shape
        h = self.heads
        dh = d // h
        # [N,T,3D] -> 3 x [N,h,T,dh]
        q, k, v = self.qkv(u).reshape(n, t, 3, h, dh).permute(2, 0, 3, 1, 4)
        if self.fused_attention and hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v)  # the same math, one kernel (torch >= 2.0)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
        return self.proj(a.transpose(1, 2).reshape(n, t, d))

    def mlp(self, u):
        return _dropout(self.fc2(_dropout(F.gelu(self.fc1(u)), self.p, self.training)), self.p, self.training)

    def forward(self, x):
        u = self.ln1(x)
        x = (u if self.normed else x) + _dropout(self.attention(u), self.p, self.training)
        u = self.ln2(x)
        return (u if self.normed else x) + self.mlp(u)


class Net(nn.Module):
    """ParaFormer: Net(cfg) or Net(branches=2, depth=3, ...) (make_config's
    keys). state_dict names and shapes are those of paraformer's checkpoints:
    embed.{proj.weight,proj.bias,cls,pos}, branches.{b}.{l}.{ln1,qkv,proj,ln2,
    fc1,fc2}.{weight,bias}, ln.{weight,bias}, head.{weight,bias}.

    Initialisation as paraformer's (and nn.Linear's): Linear weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), LayerNorm 1 and 0, cls and pos
    N(0, embed_std^2) (0.02; the authors' `paper` preset uses 1).

    `active` (default: all) is how many branches run, the first ones: setting
    it to k is the paper's compression to k branches. `fused_attention` uses
    F.scaled_dot_product_attention where torch has it (the benchmarks); the
    default is the explicit softmax(q k^T / sqrt(dh)) v. `streams` (a list of
    CUDA streams, one per branch) runs the branches concurrently on one GPU."""

    def __init__(self, cfg=None, embed_std=0.02, fused_attention=False, **over):
        super().__init__()
        cfg = make_config(cfg, **over)
        self.cfg = cfg
        self.embed = Embed(cfg, embed_std)
        self.branches = nn.ModuleList(
            nn.ModuleList(Layer(cfg, fused_attention) for _ in range(cfg["depth"])) for _ in range(cfg["branches"]))
        self.ln = nn.LayerNorm(cfg["dim"], eps=1e-5)
        self.head = nn.Linear(cfg["dim"], cfg["classes"])
        self.active = cfg["branches"]
        self.streams = None

    @staticmethod
    def run_branch(branch, x0):
        x = x0
        for layer in branch:
            x = layer(x)
        return x

    def branch_outputs(self, x0, active=None):
        """[B_0(X0), ..., B_{k-1}(X0)] for the first k = active branches."""
        run = self.branches[: self.active if active is None else active]
        if not run:
            raise ValueError("no active branch")
        if self.streams is None:
            return [self.run_branch(b, x0) for b in run]
        cur = torch.cuda.current_stream()
        outs = []
        for b, st in zip(run, self.streams):
            st.wait_stream(cur)
            with torch.cuda.stream(st):
                outs.append(self.run_branch(b, x0))
        for st in self.streams[: len(outs)]:
            cur.wait_stream(st)
        return outs

    def forward(self, x, active=None):
        x0 = _dropout(self.embed(x), self.cfg["emb_dropout"], self.training)
        outs = self.branch_outputs(x0, active)
        if self.cfg["aggregate"] == "sum":                 # sum_b B_b
            y = outs[0]
            for o in outs[1:]:
                y = y + o
        else:                                             # X0 + sum_b (B_b - X0)
            d = outs[0] - x0
            for o in outs[1:]:
                d = d + (o - x0)
            y = x0 + d
        pooled = y.mean(1) if self.cfg["pool"] == "mean" else y[:, 0]
        return self.head(self.ln(pooled))

    def config(self):
        """The checkpoint config of this net: the 13 keys, then dropout and
        mean/std when they are set."""
        c = {k: self.cfg[k] for k in CONFIG_KEYS}
        for k in ("dropout", "emb_dropout"):
            if self.cfg[k]:
                c[k] = self.cfg[k]
        for k in ("mean", "std"):
            if self.cfg.get(k) is not None:
                c[k] = list(self.cfg[k])
        return c


# ---------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, a JSON header (tensor ->
# dtype, shape, data_offsets; "__metadata__" -> string map), raw
# little-endian data

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def _package():
    """safetensors' torch API, or None when the package is not installed."""
    try:
        import safetensors
        import safetensors.torch
        return safetensors
    except ImportError:
        return None


def read_header(path):
    """The JSON header of a safetensors file, __metadata__ included."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("%s: shorter than the 8-byte header length" % path)
        n = struct.unpack("<Q", head)[0]
        if n > os.path.getsize(path) - 8:
            raise ValueError("%s: header length %d exceeds the file size" % (path, n))
        return json.loads(f.read(n).decode("utf-8"))


def read_safetensors(path):
    """(OrderedDict name -> CPU tensor, in file order; metadata dict), read
    in plain Python with every offset, size and dtype checked; the errors name
    the file."""
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
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        bad("__metadata__ must map strings to strings")
    data = buf[8 + n:]
    out, spans = collections.OrderedDict(), []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            bad("tensor %r: entry must have exactly dtype, shape, data_offsets" % name)
        if e["dtype"] not in DTYPES:
            bad("tensor %r: unsupported dtype %r" % (name, e["dtype"]))
        dt, shape = DTYPES[e["dtype"]], e["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            bad("tensor %r: bad shape %r" % (name, shape))
        offs = e["data_offsets"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            bad("tensor %r: bad data_offsets %r" % (name, offs))
        b, end = offs
        count = _prod(shape)
        size = torch.empty((), dtype=dt).element_size()
        if not 0 <= b <= end <= len(data):
            bad("tensor %r: data_offsets %r outside the %d data bytes" % (name, offs, len(data)))
        if end - b != count * size:
            bad("tensor %r: %d bytes for shape %r %s" % (name, end - b, shape, e["dtype"]))
        spans.append((b, end, name))
        if count:
            t = torch.frombuffer(bytearray(data[b:end]), dtype=dt)
            if sys.byteorder != "little" and size > 1:
                raise ValueError("%s: big-endian hosts are not supported" % path)
            out[name] = t.reshape(shape)
        else:
            out[name] = torch.empty(shape, dtype=dt)
    pos = 0
    for b, end, name in sorted(spans):
        if b != pos:
            bad("tensor %r: data not contiguous (starts at %d, expected %d)" % (name, b, pos))
        pos = end
    if pos != len(data):
        bad("%d trailing bytes after the last tensor" % (len(data) - pos))
    return out, meta


def _prod(xs):
    r = 1
    for x in xs:
        r *= x
    return r


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if sys.byteorder != "little" and t.element_size() > 1:
        raise ValueError("big-endian hosts are not supported")
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""


def write_safetensors(path, tensors, metadata=None, dtype=None):
    """Plain-Python writer: `tensors` a list of (name, tensor) or a dict, written
    in that order (each converted to `dtype`, "F32"/"F64"/..., when given);
    `metadata` a str -> str dict. The JSON header is compact and padded with
    spaces to a multiple of 8 bytes; the file is written to PATH.tmp and
    renamed, so the output is the same bytes for the same input."""
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header = {"__metadata__": {str(k): str(v) for k, v in (metadata or {}).items()}}
    blobs, off = [], 0
    for name, t in items:
        if name in header:
            raise ValueError("duplicate tensor name %r" % name)
        t = torch.as_tensor(t)
        if dtype is not None:
            t = t.to(DTYPES[dtype])
        if t.dtype not in DTYPE_NAMES:
            raise ValueError("tensor %r: dtype %s has no safetensors name" % (name, t.dtype))
        b = _tensor_bytes(t)
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
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


def load_file(path):
    """(dict name -> tensor, metadata): through the safetensors package when
    it is installed, else read_safetensors."""
    st = _package()
    if st is None:
        return read_safetensors(path)
    with st.safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        return collections.OrderedDict((k, f.get_tensor(k)) for k in f.keys()), meta


def checkpoint_config(meta, path="checkpoint"):
    """The config dict of a checkpoint's metadata; ValueError when it has none
    (heads and the residual form cannot be inferred from shapes)."""
    if meta.get("format", "paraformer") != "paraformer":
        raise ValueError("%s: __metadata__ format is %r, not 'paraformer'" % (path, meta.get("format")))
    if "config" not in meta:
        raise ValueError("%s: no config in __metadata__ (a paraformer checkpoint has one)" % path)
    cfg = json.loads(meta["config"])
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError("%s: config lacks %s" % (path, ", ".join(missing)))
    return cfg


def load(path, dtype=torch.float32, device="cpu", **net_kw):
    """A paraformer checkpoint as (net in eval mode, config dict, metadata).
    The net is built from the file's config and loaded by name, strictly:
    every tensor present with its exact shape, nothing else (train.* aside)."""
    tensors, meta = load_file(path)
    cfg = make_config(checkpoint_config(meta, path))
    net = Net(cfg, **net_kw)
    model = {k: v for k, v in tensors.items() if not k.startswith("train.")}
    want = net.state_dict()
    errs = []
    for k, v in want.items():
        if k not in model:
            errs.append("missing tensor %s %s" % (k, list(v.shape)))
        elif tuple(model[k].shape) != tuple(v.shape):
            errs.append("tensor %s has shape %s, the config needs %s" % (k, list(model[k].shape), list(v.shape)))
    errs += ["unexpected tensor %s %s" % (k, list(model[k].shape)) for k in model if k not in want]
    if errs:
        raise ValueError("%s does not load into Net:\n  %s" % (path, "\n  ".join(errs)))
    net.to(dtype)
    net.load_state_dict({k: v.to(dtype) for k, v in model.items()}, strict=True)
    return net.to(device).eval(), cfg, meta


def save(net, path, metadata=None, dtype=torch.float32):
    """Writes net's parameters as a paraformer checkpoint (F32 by default) with
    its config in __metadata__; `metadata` adds keys. The safetensors package
    writes it when installed, else write_safetensors."""
    meta = {"format": "paraformer", "format_version": "1", "config": json.dumps(net.config())}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    tensors = collections.OrderedDict((k, v.detach().to("cpu", dtype).contiguous()) for k, v in net.state_dict().items())
    st = _package()
    if st is None:
        write_safetensors(path, tensors, meta)
    else:
        st.torch.save_file(tensors, path, metadata=meta)


# ---------------------------------------------------------------------------
# the benchmark (the program)

def timed(fn, sync, warm, reps):
    """Median seconds of `reps` calls of fn after `warm` untimed ones."""
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name, cfg, a):
    dev = a.device
    kind = dev.split(":")[0]
    torch.manual_seed(0)
    net = Net(cfg, fused_attention=True).to(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if kind == "cuda" else (lambda: None)
    shape = (cfg["channels"], cfg["image_size"], cfg["image_size"])
    xb = torch.randn(a.batch, *shape, device=dev)
    yb = torch.randint(0, cfg["classes"], (a.batch,), device=dev)
    big = torch.randn(a.infer_batch, *shape, device=dev)
    one = xb[:1]
    res = {"model": name, "params": sum(p.numel() for p in net.parameters())}
    res.update({k: cfg[k] for k in ("dim", "heads", "mlp_dim", "branches", "depth", "residual", "aggregate")})
    precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if kind == "cuda" or a.bf16 else [])
    for prec, dt in precisions:
        def cast():
            return torch.autocast(kind, dtype=dt) if dt is not None else contextlib.nullcontext()
        compiles = [False, True] if a.compile and hasattr(torch, "compile") and prec in a.compile_prec.split(",") else [False]
        if a.compile_only:
            compiles = [c for c in compiles if c]
        for compiled in compiles:
            model = torch.compile(net) if compiled else net
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, **({"fused": True} if kind == "cuda" else {}))
            tag = prec + ("+compile" if compiled else "")

            def step():
                with cast():
                    loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def infer(x):
                with torch.no_grad(), cast():
                    model(x)

            net.train()
            res["train_img_s[%s]" % tag] = round(a.batch / timed(step, sync, a.warm, a.reps), 1)
            net.eval()
            res["infer_img_s[%s]" % tag] = round(a.infer_batch / timed(lambda: infer(big), sync, a.warm, a.reps), 1)
            res["latency_b1_ms[%s]" % tag] = round(1e3 * timed(lambda: infer(one), sync, a.warm, 3 * a.reps), 3)
            if kind == "cuda" and cfg["branches"] > 1 and not compiled:
                net.streams = [torch.cuda.Stream() for _ in net.branches]
                res["latency_b1_ms[%s+streams]" % tag] = round(
                    1e3 * timed(lambda: infer(one), sync, a.warm, 3 * a.reps), 3)
                res["infer_img_s[%s+streams]" % tag] = round(
                    a.infer_batch / timed(lambda: infer(big), sync, a.warm, a.reps), 1)
                net.streams = None
    print(json.dumps(res), flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--models", default="vit12,pf4x3", help="comma list of pfBxL / vitN (default %(default)s)")
    p.add_argument("--dataset", default="cifar", choices=["cifar", "fmnist"],
                   help="input shape: cifar 32x32x3, fmnist 28x28x1; 10 classes")
    p.add_argument("--image-size", "--img", dest="img", type=int, default=0,
                   help="image size instead of the dataset's (the authors resize to 224)")
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--mlp", type=int, default=4, help="MLP width as a multiple of dim (default 4)")
    p.add_argument("--residual", choices=CHOICES["residual"], default=None)
    p.add_argument("--aggregate", choices=CHOICES["aggregate"], default=None)
    p.add_argument("--qkv-bias", choices=["on", "off"], default=None)
    p.add_argument("--variant", choices=["standard", "paper"], default="standard",
                   help="paper: normed residual, sum aggregation, no qkv bias (the authors' code)")
    p.add_argument("--batch", type=int, default=0, help="training batch (default 256; 64 with --quick)")
    p.add_argument("--infer-batch", type=int, default=1024, help="inference batch (default 1024)")
    p.add_argument("--warm", type=int, default=5, help="untimed repeats (default 5)")
    p.add_argument("--reps", type=int, default=20, help="timed repeats (default 20; batch-1 latency: 3x)")
    p.add_argument("--quick", action="store_true", help="CPU-sized: batch 64 unless given, warm 2, reps 5")
    p.add_argument("--bf16", action="store_true",
                   help="CPU: also time bf16 autocast (torch.autocast('cpu', dtype=torch.bfloat16); on CUDA always)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (torch >= 2)")
    p.add_argument("--compile-prec", default="bf16", help="precisions to compile, comma list (default bf16)")
    p.add_argument("--compile-only", action="store_true",
                   help="with --compile: time only the compiled runs (the eager ones timed by another call)")
    p.add_argument("--json", metavar="OUT", help="also write the results as a JSON list")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.batch, a.warm, a.reps = a.batch or 64, 2, 5
    a.batch = a.batch or 256
    cuda = a.device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    img, ch = (32, 3) if a.dataset == "cifar" else (28, 1)
    paper = a.variant == "paper"
    base = dict(image_size=a.img or img, channels=ch, patch_size=a.patch, dim=a.dim, heads=a.heads,
                mlp_dim=a.mlp * a.dim, classes=10,
                residual=a.residual or ("normed" if paper else "prenorm"),
                aggregate=a.aggregate or ("sum" if paper else "delta"),
                qkv_bias=(a.qkv_bias == "on") if a.qkv_bias else not paper)
    try:
        models = [(m, make_config(base, **dict(zip(("branches", "depth"), parse_zoo(m)))))
                  for m in a.models.split(",")]
    except ValueError as e:
        p.error(str(e))
    print(json.dumps({"torch": torch.__version__, "device": a.device,
                      "gpu": torch.cuda.get_device_name(a.device) if cuda else None,
                      "threads": torch.get_num_threads(), "batch": a.batch, "infer_batch": a.infer_batch}),
          flush=True)
    out = [bench(m, cfg, a) for m, cfg in models]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""branch_norms.py - how much each branch contributes: the RMS of
B_b(X0) - X0 at the CLS token over Fashion-MNIST test images, per branch,
beside the RMS of X0 itself (prenorm + delta models, cls pooling).

    /usr/bin/python3 tools/branch_norms.py M.safetensors [--data DIR] [--n 1000]

--data is the folder holding t10k-images-idx3-ubyte[.gz] (default
$PARAFORMER_DATA/fashion-mnist; data/fmnist-sample, the shipped sample,
works too). A branch whose contribution is a small fraction of the others'
barely moves the final LayerNorm's output: the README uses this to show why
a second branch added by the staged schedule changes the accuracy so little.
Needs PyTorch (Debian: apt-get install python3-torch libopenblas0-pthread;
/usr/bin/python3) and the reference model tools/torch_ref.py beside this
script.
"""
import argparse
import gzip
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no tools/__pycache__ in the checkout
try:
    import torch_ref as tr
    import torch
except ImportError as e:
    sys.exit("error: %s" % e)


def test_images(folder, n, side):
    """The first n test images of Fashion-MNIST in folder, uint8 [n, side*side]."""
    path = os.path.join(folder, "t10k-images-idx3-ubyte")
    if os.path.exists(path):
        with open(path, "rb") as f:
            raw = f.read()
    elif os.path.exists(path + ".gz"):
        with gzip.open(path + ".gz") as f:
            raw = f.read()
    else:
        sys.exit("error: %s[.gz] not found (give --data DIR or set PARAFORMER_DATA)" % path)
    magic, count, rows, cols = struct.unpack(">4I", raw[:16])
    if magic != 0x803 or (rows, cols) != (side, side):
        sys.exit("error: %s is not an IDX file of %dx%d images" % (path, side, side))
    n = min(n, count)
    return torch.frombuffer(bytearray(raw[16:16 + n * side * side]), dtype=torch.uint8).reshape(n, 1, side, side)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    env = os.environ.get("PARAFORMER_DATA")
    ap.add_argument("--data", default=os.path.join(env, "fashion-mnist") if env else None,
                    help="Fashion-MNIST folder (default $PARAFORMER_DATA/fashion-mnist)")
    ap.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    a = ap.parse_args()
    if not a.data:
        ap.error("give --data DIR (the Fashion-MNIST folder) or set PARAFORMER_DATA")
    try:
        net, cfg, _ = tr.load(a.model)
    except (OSError, ValueError) as e:
        sys.exit("error: %s" % e)
    if cfg["residual"] != "prenorm" or cfg["aggregate"] != "delta" or cfg["pool"] != "cls":
        sys.exit("%s: only prenorm + delta + cls models" % a.model)
    if cfg["channels"] != 1:
        sys.exit("%s: a model of %d channels, not a Fashion-MNIST one" % (a.model, cfg["channels"]))
    u8 = test_images(a.data, a.n, cfg["image_size"])
    mean, std = (cfg.get("mean") or [0.0])[0], (cfg.get("std") or [1.0])[0]
    x = (u8.float() / 255.0 - mean) / std
    with torch.no_grad():
        x0 = net.embed(x)
        print("%s: %d test images, RMS at the CLS token" % (a.model, x.shape[0]))
        print("  X0          %.4f" % x0[:, 0].pow(2).mean().sqrt().item())
        for b, branch in enumerate(net.branches):
            d = net.run_branch(branch, x0) - x0
            print("  branch %-4d %.4f" % (b + 1, d[:, 0].pow(2).mean().sqrt().item()))


if __name__ == "__main__":
    main()

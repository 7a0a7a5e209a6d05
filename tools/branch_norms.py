#!/usr/bin/env python3
"""branch_norms.py - how much each branch contributes: the RMS of
B_b(X0) - X0 at the CLS token over Fashion-MNIST test images, per branch,
beside the RMS of X0 itself (prenorm + delta models, cls pooling).

    /usr/bin/python3 tools/branch_norms.py M.safetensors [--data DIR] [--n 1000]

A branch whose contribution is a small fraction of the others' barely moves
the final LayerNorm's output: the README uses this to show why a second
branch added by the staged schedule changes the accuracy so little.
Needs PyTorch and NumPy (Debian's python3-torch: /usr/bin/python3) and the
reference model ../shared/anchors/torch_anchor.py (same tensor names).
"""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    cfg = json.loads(header["__metadata__"]["config"])
    tensors = {}
    for k, v in header.items():
        if k == "__metadata__" or k.startswith("train.") or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        tensors[k] = torch.from_numpy(np.frombuffer(data[8 + n + a:8 + n + b], dtype=np.float32).copy()).reshape(v["shape"])
    return cfg, tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "fashion-mnist"))
    ap.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--anchors", default=os.path.join(HERE, "..", "..", "shared", "anchors"))
    a = ap.parse_args()
    sys.path.insert(0, a.anchors)
    from torch_anchor import Net

    cfg, t = load(a.model)
    if cfg.get("residual", "prenorm") != "prenorm" or cfg.get("aggregate", "delta") != "delta" or cfg.get("pool", "cls") != "cls":
        sys.exit("%s: only prenorm + delta + cls models" % a.model)
    net = Net(cfg["image_size"], cfg["channels"], cfg["patch_size"], cfg["dim"], cfg["heads"], 0, cfg["branches"],
              cfg["depth"], cfg["classes"], qkv_bias=cfg.get("qkv_bias", True), mlp_dim=cfg["mlp_dim"])
    net.load_state_dict(t)
    path = os.path.join(a.data, "t10k-images-idx3-ubyte")
    raw = gzip.open(path + ".gz").read() if os.path.exists(path + ".gz") else open(path, "rb").read()
    side = cfg["image_size"]
    x = np.frombuffer(raw[16:16 + a.n * side * side], dtype=np.uint8).reshape(-1, 1, side, side) / 255.0
    mean, std = cfg.get("mean", [0.0])[0], cfg.get("std", [1.0])[0]
    x = torch.tensor((x - mean) / std, dtype=torch.float32)
    with torch.no_grad():
        x0 = net.embed(x)
        print("%s: %d test images, RMS at the CLS token" % (a.model, x.shape[0]))
        print("  X0          %.4f" % x0[:, 0].pow(2).mean().sqrt().item())
        for b, branch in enumerate(net.branches):
            d = branch(x0) - x0
            print("  branch %-4d %.4f" % (b + 1, d[:, 0].pow(2).mean().sqrt().item()))


if __name__ == "__main__":
    main()

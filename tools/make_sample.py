#!/usr/bin/env python3
"""make_sample.py - the shipped Fashion-MNIST sample (data/fmnist-sample/).

    tools/make_sample.py --src DIR --out DIR [--train 4000] [--test 1000]

Reads the four official Fashion-MNIST files in --src (IDX, raw or .gz),
keeps the first --train training and --test test images with their labels,
writes them under the official names as gzip'd IDX files (the counts in the
headers fixed) through `gzip -9 -n` (no file name, mtime 0, so the output is
reproducible; Python's zlib when there is no gzip program, which gives other
bytes for the same data) and prints their MD5s. Plain python3, no numpy.

    tools/make_sample.py --src "$PARAFORMER_DATA/fashion-mnist" --out data/fmnist-sample
"""
import argparse
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys


def read_idx(src, name):
    """The bytes of src/name or src/name.gz (the raw file wins)."""
    path = os.path.join(src, name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    with gzip.open(path + ".gz", "rb") as f:
        return f.read()


def slice_idx(data, name, magic, n):
    """The first n items of an IDX file of unsigned bytes, header fixed."""
    rank = magic & 0xFF
    hlen = 4 + 4 * rank
    if len(data) < hlen or struct.unpack(">I", data[:4])[0] != magic:
        sys.exit("%s: not an IDX file with magic 0x%08x" % (name, magic))
    dims = list(struct.unpack(">%dI" % rank, data[4:hlen]))
    item = 1
    for d in dims[1:]:
        item *= d
    if len(data) != hlen + dims[0] * item:
        sys.exit("%s: size does not match the header" % name)
    if n > dims[0]:
        sys.exit("%s: has %d items, fewer than the %d asked for" % (name, dims[0], n))
    dims[0] = n
    return struct.pack(">I", magic) + struct.pack(">%dI" % rank, *dims) + data[hlen:hlen + n * item]


def write_gz(path, payload):
    """`gzip -9 -n` (no name, mtime 0: reproducible bytes). Without the gzip
    program, Python's zlib at level 9: the same data, other bytes."""
    gz = shutil.which("gzip")
    with open(path, "wb") as raw:
        if gz:
            subprocess.run([gz, "-9", "-n", "-c"], input=payload, stdout=raw, check=True)
        else:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
                f.write(payload)


def main():
    ap = argparse.ArgumentParser(description="Write the first images of Fashion-MNIST as gzip'd IDX files.")
    ap.add_argument("--src", required=True, help="folder with the official files (raw or .gz)")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--train", type=int, default=4000, help="training images to keep (default 4000)")
    ap.add_argument("--test", type=int, default=1000, help="test images to keep (default 1000)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    jobs = [("train-images-idx3-ubyte", 0x803, a.train), ("train-labels-idx1-ubyte", 0x801, a.train),
            ("t10k-images-idx3-ubyte", 0x803, a.test), ("t10k-labels-idx1-ubyte", 0x801, a.test)]
    for name, magic, n in jobs:
        out = os.path.join(a.out, name + ".gz")
        write_gz(out, slice_idx(read_idx(a.src, name), name, magic, n))
        with open(out, "rb") as f:
            blob = f.read()
        print("%s  %s  %d bytes" % (hashlib.md5(blob).hexdigest(), out, len(blob)))


if __name__ == "__main__":
    main()

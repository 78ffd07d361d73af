#!/usr/bin/env python3
"""ckpt_same.py A B: the manifests of two checkpoints are equal except for
wall-clock times (every "seconds" key), and the directories hold the same
file names (no temporary left behind). Exit 1 naming the first difference."""
import json
import os
import sys


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def first_diff(a, b, path="manifest"):
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'B' if k not in a else 'A'}"
            d = first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


a_dir, b_dir = sys.argv[1:3]
fa, fb = sorted(os.listdir(a_dir)), sorted(os.listdir(b_dir))
if fa != fb:
    sys.exit(f"files differ: {fa} vs {fb}")
ma = strip(json.load(open(os.path.join(a_dir, "manifest.json"))))
mb = strip(json.load(open(os.path.join(b_dir, "manifest.json"))))
d = first_diff(ma, mb)
if d:
    sys.exit(d)

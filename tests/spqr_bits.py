#!/usr/bin/python3
"""Bits per parameter of an SpQR checkpoint recomputed from its files (not
from the C): per linear, SpQR's count (Dettmers et al. 2023, sec. 4.1 and
its reference code) = bits * out * in (dense codes)
  + 2 * stats_bits * out * ngroups   (first-level scale and zero)
  + 2 * (16 + 16) * ceil(out / stats_group) * ngroups
                                     (second level: fp16 scale and zero of
                                      the scales and of the zeros)
  + 32 * outliers                    (fp16 value + 16-bit column index)
  + ceil(log2 in) * in               (with act-order: the permutation)
The manifest's per-linear `spqr_bits` and `bits_per_param` (the sweep's
column) must equal it (1e-9 relative) and its outlier counts the stored
sparse part's; prints the model's average.

usage: spqr_bits.py CKPT_DIR
"""
import json, math, os, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sq_check import H5  # noqa: E402


def dims(f, ds):
    import subprocess
    out = subprocess.run(["h5dump", "-H", "-d", ds, f.path], check=True, capture_output=True, text=True).stdout
    s = out[out.index("DATASPACE"):]
    return [int(x) for x in s[s.index("(") + 1:s.index(")")].split(",")]


def main():
    ck = sys.argv[1]
    man = json.load(open(os.path.join(ck, "manifest.json")))
    o = man["options"]
    bits, sb, sg = o["bits"], o["spqr"]["stats_bits"], o["spqr"]["stats_group"]
    act = bool(o.get("act_order", False))
    fails, tot_bits, tot_params = 0, 0.0, 0.0
    for e in man["completed_blocks"]:
        l, f = e["block"], H5(os.path.join(ck, e["file"]))
        for mod, st in e["stats"]["spqr_bits"].items():
            if mod == "block":
                continue
            out, n = dims(f, "/layers/%d/%s/codes" % (l, mod))
            ng = dims(f, "/layers/%d/%s/scales" % (l, mod))[1]
            try:
                nnz = dims(f, "/layers/%d/%s/outliers_idx" % (l, mod))[0]
            except Exception:
                nnz = 0
            b = bits * out * n + 2 * sb * out * ng + 64 * math.ceil(out / sg) * ng + 32 * nnz
            if act:
                b += math.ceil(math.log2(max(n, 2))) * n
            bpp = e["stats"][mod]["bits_per_param"]
            ok = nnz == st["outliers"] and all(abs(b / (out * n) - x) <= 1e-9 * b / (out * n)
                                               for x in (st["bits"], bpp))
            if not ok:
                print("block %d %s: manifest %.6f bits / %d outliers, files give %.6f / %d FAIL"
                      % (l, mod, st["bits"], st["outliers"], b / (out * n), nnz))
            fails += not ok
            tot_bits += b
            tot_params += out * n
    print("spqr_bits: model %.4f bits per parameter over %d parameters: %s"
          % (tot_bits / tot_params, tot_params, "all ok" if not fails else "%d FAILED" % fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

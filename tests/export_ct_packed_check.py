#!/usr/bin/python3
"""Independent check of `mpiquant export --format compressed-tensors` for
weight-only checkpoints (format "pack-quantized", W4A16 / W8A16), written
from the compressed-tensors description of the layout, not from the C:

  {linear}.weight_packed      int32 [out, ceil(in / f)], f = 32 // num_bits:
                              value k of a word in bits [k*b, (k+1)*b), each
                              the signed quantized value + 2^(b-1), padding 0
  {linear}.weight_scale       [out, in // group_size] (strategy group) or
                              [out, 1] (channel)
  {linear}.weight_zero_point  int32 [ceil(out / f), groups], zero points
                              (signed + 2^(b-1)) packed along dim 0; only
                              when not symmetric
  {linear}.weight_g_idx       int32 [in]: when actorder == "group"
  {linear}.weight_shape       [2] = (out, in)
  dequantized w[r, c] = (q[r, c] - zp[r, g]) * scale[r, g], g = g_idx[c]
  (or c // group_size), symmetric: zp = 0.

Checks: config (quant_method, format, status, one group targeting Linear,
weights args = the checkpoint's bits / group / sym / act-order, no
input_activations, lm_head ignored); every linear's tensors, dtypes and
shapes; the dequantized weight equals the checkpoint's
scales[:, g_idx] * (codes - zeros[:, g_idx]) in float32 bit for bit (read
with h5py through our zstd plugin); no stray tensors.
usage: export_ct_packed_check.py EXPORT_DIR CKPT_DIR
"""
import json, os, sys

import numpy as np
import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_ct_check import read_st_dir, LINEARS, fail  # noqa: E402


def unpack(words, n, b):
    """words [rows, ceil(n / f)] int32 -> [rows, n] unsigned values."""
    f = 32 // b
    u = words.astype(np.int64) & 0xFFFFFFFF
    vals = np.stack([(u >> (k * b)) & ((1 << b) - 1) for k in range(f)], axis=-1)
    return vals.reshape(words.shape[0], -1)[:, :n]


def main():
    exp, ck = sys.argv[1:3]
    qc = json.load(open(os.path.join(exp, "config.json")))["quantization_config"]
    if qc.get("quant_method") != "compressed-tensors": fail("quant_method %r" % qc.get("quant_method"))
    if qc.get("format") != "pack-quantized": fail("format %r" % qc.get("format"))
    if qc.get("quantization_status") != "compressed": fail("quantization_status")
    if "lm_head" not in qc.get("ignore", []): fail("lm_head not ignored")
    (g,) = qc["config_groups"].values()
    if g["targets"] != ["Linear"]: fail("targets %r" % g["targets"])
    if g.get("input_activations") is not None: fail("weight-only export has input_activations")
    wa = g["weights"]
    b, sym, gs, actorder = wa["num_bits"], wa["symmetric"], wa["group_size"], wa["actorder"]
    if wa["type"] != "int" or wa["dynamic"] is not False: fail("weights type/dynamic %r" % wa)
    if wa["strategy"] != ("group" if gs else "channel"): fail("strategy %r with group_size %r" % (wa["strategy"], gs))
    T, raw = read_st_dir(exp)
    man = json.load(open(os.path.join(ck, "manifest.json")))
    seen, nlin = set(), 0
    f = 32 // b
    for fe in man["files"]:
        with h5py.File(os.path.join(ck, fe["file"]), "r") as h:
            for blk in range(fe["first_block"], fe["first_block"] + fe["nblocks"]):
                for mod in h["layers"][str(blk)].keys():  # every stored linear
                    gr = h["layers"][str(blk)][mod]
                    a = gr.attrs
                    if int(a["bits"]) != b or bool(a["sym"]) != sym: fail("%d.%s: bits/sym differ from the config" % (blk, mod))
                    if (int(a["group_size"]) if int(a["group_size"]) > 0 else None) != gs: fail("group_size differs")
                    ao = bool(a["act_order"]) and not bool(a["static_groups"])
                    codes = gr["codes"][...].astype(np.float32)
                    scales, zeros, gidx = gr["scales"][...], gr["zeros"][...], gr["g_idx"][...]
                    ref = (scales[:, gidx] * (codes - zeros[:, gidx])).astype(np.float32)
                    out, inn = ref.shape
                    ng = scales.shape[1]
                    pre = "model.layers.%d.%s." % (blk, mod)
                    names = [pre + n for n in ("weight_packed", "weight_scale", "weight_shape")]
                    names += [pre + "weight_zero_point"] if not sym else []
                    names += [pre + "weight_g_idx"] if ao else []
                    for n in names:
                        if n not in T: fail("missing " + n)
                    seen.update(names)
                    if pre + "weight" in T: fail(pre + "weight (unpacked) present")
                    if (pre + "weight_zero_point" in T) == sym: fail(pre + "weight_zero_point presence wrong")
                    if (pre + "weight_g_idx" in T) != ao: fail(pre + "weight_g_idx presence wrong (actorder %r)" % actorder)
                    if actorder != ("group" if ao else ("weight" if bool(a["act_order"]) else None)):
                        fail("actorder %r" % actorder)
                    wp = T[pre + "weight_packed"]
                    if raw[pre + "weight_packed"][0] != "I32" or wp.shape != (out, -(-inn // f)): fail(pre + "weight_packed dtype/shape")
                    if list(T[pre + "weight_shape"]) != [out, inn]: fail(pre + "weight_shape %r" % T[pre + "weight_shape"])
                    sc = T[pre + "weight_scale"].astype(np.float32)
                    if sc.shape != (out, inn // gs if gs else 1): fail(pre + "weight_scale shape %r" % (sc.shape,))
                    q = unpack(wp, inn, b).astype(np.float32) - (1 << (b - 1))
                    pad = (unpack(wp, -(-inn // f) * f, b)[:, inn:])
                    if pad.size and pad.any(): fail(pre + "padding is not 0")
                    if sym:
                        zp = np.zeros((out, sc.shape[1]), np.float32)
                    else:
                        zw = T[pre + "weight_zero_point"]
                        if raw[pre + "weight_zero_point"][0] != "I32" or zw.shape != (-(-out // f), sc.shape[1]):
                            fail(pre + "weight_zero_point dtype/shape %r" % (zw.shape,))
                        zp = unpack(zw.T.copy(), out, b).T.astype(np.float32) - (1 << (b - 1))
                    gi = T[pre + "weight_g_idx"].astype(np.int64) if ao else (np.arange(inn) // (gs or inn))
                    w = ((q - zp[:, gi]) * sc[:, gi]).astype(np.float32)
                    nd = int((w != ref).sum())
                    if nd: fail("%sdequantized: %d of %d values differ from the checkpoint" % (pre, nd, w.size))
                    nlin += 1
    from moe_ref import expected_linears
    cfg = json.load(open(os.path.join(exp, "config.json")))
    if nlin != expected_linears(cfg, man["nblocks"]):
        fail("%d linears in the checkpoint, the config implies %d" % (nlin, expected_linears(cfg, man["nblocks"])))
    lin_like = lambda k: any(s in k for s in LINEARS) or ".experts." in k or ".shared_expert." in k
    stray = [k for k in T if k.startswith("model.layers.") and lin_like(k) and k not in seen
             and not k.endswith(".bias")]  # biases stay unquantized
    if stray: fail("stray linear tensors: %r" % stray[:4])
    print("pack-quantized W%dA16 %s%s%s: %d linears dequantize exactly to the checkpoint"
          % (b, "g%d" % gs if gs else "per-channel", " sym" if sym else " asym",
             " actorder=" + actorder if actorder else "", nlin))
    print("export_ct_packed_check: 1 passed, 0 failed")


main()

#!/usr/bin/python3
"""Independent reader of a compressed-tensors "float-quantized" export (FP8),
written from the format's field description (docs/io.md / compressed-tensors
QuantizationArgs and its naive quantization compressor), not from the C:

  quantization_config: quant_method compressed-tensors, format
  float-quantized, config_groups.group_0 {targets ["Linear"], weights
  {num_bits 8, type float, symmetric, strategy channel | block,
  block_structure [Bh, Bw] (block), dynamic false}, input_activations null |
  {type float, num_bits 8, strategy token, dynamic true} | {strategy group,
  group_size, dynamic true} | {strategy tensor, dynamic false}}, ignore
  ["lm_head"].
  {linear}.weight F8_E4M3 [out, in] (byte = sign, 4 exponent bits bias 7, 3
  mantissa bits, OCP E4M3), {linear}.weight_scale F32: channel [out, 1],
  block [ceil(out/Bh), ceil(in/Bw)]; w = value(weight) * scale of its row or
  block; {linear}.input_scale F32 [1] with static activations.

Every linear's dequantized weight must equal the checkpoint's dequantized
weight (scales * (value(codes) - zeros) on the grid its attribute names,
read with h5py) bit for bit; input scales must equal the checkpoint's aux
data; the config must describe the checkpoint's options; every other tensor
is the source model's.

usage: export_ct_fp8_check.py EXPORT_DIR CKPT_DIR MODEL_DIR
"""
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fp8_ref import TABLE  # noqa: E402  (E4M3 values from the bit fields)

DT = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "I64": "<i8", "I8": "i1", "U8": "u1",
      "F8_E4M3": "u1"}
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
GROUP = [0, 0, 0, 1, 2, 2, 3]


def read_st_dir(d):
    out = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        b = open(os.path.join(d, fn), "rb").read()
        n = int.from_bytes(b[:8], "little")
        hdr = json.loads(b[8:8 + n])
        hdr.pop("__metadata__", None)
        for k, v in hdr.items():
            s, e = v["data_offsets"]
            out[k] = (v["dtype"], np.frombuffer(b[8 + n + s:8 + n + e], DT[v["dtype"]]).reshape(v["shape"]))
    return out


def main():
    exp, ck, mdir = sys.argv[1:4]
    T = read_st_dir(exp)
    src = read_st_dir(mdir)
    qc = json.load(open(os.path.join(exp, "config.json")))["quantization_config"]
    man = json.load(open(os.path.join(ck, "manifest.json")))
    opt = man["options"]
    files = {e["block"]: e["file"] for e in man["completed_blocks"]}
    fails = []
    g = qc["config_groups"]["group_0"]
    w, ia = g["weights"], g["input_activations"]
    B = int(opt.get("weight_block", 0))
    act = opt["fp8_act"]
    want_in = {"none": None,
               "static": {"strategy": "tensor", "dynamic": False},
               "dynamic": {"strategy": "group", "group_size": B, "dynamic": True} if B
               else {"strategy": "token", "dynamic": True}}[act]
    if (qc["quant_method"] != "compressed-tensors" or qc["format"] != "float-quantized" or
            g["targets"] != ["Linear"] or qc["ignore"] != ["lm_head"] or w["type"] != "float" or
            w["num_bits"] != 8 or not w["symmetric"] or w["dynamic"] is not False or
            w["strategy"] != ("block" if B else "channel") or
            w["block_structure"] != ([B, B] if B else None)):
        fails.append("weights config %s does not describe options %s" % (w, opt))
    if want_in is None:
        if ia is not None:
            fails.append("input_activations %s, expected null" % ia)
    elif ia is None or ia["type"] != "float" or ia["num_bits"] != 8 or \
            any(ia.get(k) != v for k, v in want_in.items()):
        fails.append("input_activations %s, expected %s" % (ia, want_in))
    nlin = 0
    for l in sorted(files):
        f = h5py.File(os.path.join(ck, files[l]), "r")
        for li, n in enumerate(LINEARS):
            p = "model.layers.%d.%s." % (l, n)
            d = f["/layers/%d/%s" % (l, n)]
            assert d.attrs["grid"] in (b"fp8_e4m3", "fp8_e4m3")
            codes, sc, zr, gi = d["codes"][...], d["scales"][...], d["zeros"][...], d["g_idx"][...]
            ref = (sc[:, gi] * (TABLE[codes].astype(np.float32) - zr[:, gi])).astype(np.float32)
            dt, q = T[p + "weight"]
            sdt, s = T[p + "weight_scale"]
            if dt != "F8_E4M3" or sdt != "F32" or q.shape != ref.shape:
                fails.append("%s: weight %s %s, weight_scale %s" % (p, dt, q.shape, sdt))
                continue
            out, inn = q.shape
            if B:
                if s.shape != (-(-out // B), -(-inn // B)):
                    fails.append("%s: weight_scale shape %s" % (p, s.shape))
                    continue
                full = s[np.arange(out) // B][:, np.arange(inn) // B]
            else:
                if s.shape != (out, 1):
                    fails.append("%s: weight_scale shape %s" % (p, s.shape))
                    continue
                full = np.repeat(s, inn, 1)
            deq = (TABLE[q].astype(np.float32) * full).astype(np.float32)
            if not np.array_equal(deq.view(np.uint32), ref.view(np.uint32)):
                fails.append("%s: %d weights differ from the checkpoint"
                             % (p, int((deq.view(np.uint32) != ref.view(np.uint32)).sum())))
            has_in = p + "input_scale" in T
            if act == "static":
                want = f["/aux/%d/fp8.input_scale" % l][...].reshape(4)[GROUP[li]]
                if not has_in or T[p + "input_scale"][1].shape != (1,) or \
                        T[p + "input_scale"][1][0] != want:
                    fails.append("%s: input_scale %s, checkpoint %r"
                                 % (p, T.get(p + "input_scale"), want))
            elif has_in:
                fails.append("%s: input_scale without static activations" % p)
            nlin += 1
        f.close()
    for k, (dt, v) in src.items():
        if k.endswith("_proj.weight") and ".layers." in k:
            continue
        if k not in T or not np.array_equal(T[k][1], v):
            fails.append("%s: not the source tensor" % k)
    for m in fails[:10]:
        print("FAIL", m)
    print("export_ct_fp8_check: %d linears (%s, act %s) %s" %
          (nlin, "%dx%d blocks" % (B, B) if B else "per channel", act,
           "decode exactly to the checkpoint" if not fails else "%d FAILURES" % len(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

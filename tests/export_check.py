#!/usr/bin/python3
"""Independent check of `mpiquant export --format gptq`.

Written from the GPTQ v1 format description, not from the C packer:
  qweight int32 [in*bits/32, out]: for output column o, the codes of input
          features 0..in-1 form one little-endian bitstream, `bits` bits each,
          least significant first (3-bit codes may straddle two words);
  qzeros  int32 [groups, out*bits/32]: per group, the bitstream of
          (zero - 1) over output columns; loaders add 1 back;
  scales  f16 [groups, out]; g_idx int32 [in].
Dequantized weight W[o, i] = scales[g, o] * (code[o, i] - (qzero[g, o] + 1)),
g = g_idx[i], computed in float32.

Reference: the checkpoint's own codes/scales/zeros/g_idx read with h5py (our
zstd plugin through HDF5_PLUGIN_PATH), dequantized with the f16-rounded scales
the format stores. Exact equality is required except where the checkpoint's
zero point is 0 (GPTQ v1 cannot represent it: it reads back as 2^bits).

usage: export_check.py EXPORT_DIR CKPT_DIR
"""
import glob, json, os, struct, sys

import numpy as np
import h5py


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop("__metadata__", None)
    dt = {"I32": np.int32, "F16": np.float16, "F32": np.float32, "BF16": np.uint16,
          "U8": np.uint8, "I64": np.int64, "F64": np.float64}
    out = {}
    for k, v in hdr.items():
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=np.dtype(dt[v["dtype"]]).newbyteorder("<")).reshape(v["shape"])
    return out


def unpack(words, bits, length):
    """words int32 [length*bits/32, nvec] -> codes uint8 [nvec, length]"""
    w = words.astype(np.uint32).astype(np.uint64)   # [nw, nvec]
    nvec = w.shape[1]
    codes = np.zeros((nvec, length), np.uint8)
    mask = (1 << bits) - 1
    for i in range(length):
        bit = i * bits
        k, sh = bit // 32, bit % 32
        v = w[k] >> np.uint64(sh)
        if sh + bits > 32:
            v = v | (w[k + 1] << np.uint64(32 - sh))
        codes[:, i] = (v & np.uint64(mask)).astype(np.uint8)
    return codes


def main():
    exp, ck = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(exp, "config.json")))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq", qc
    bits = qc["bits"]
    tensors = {}
    for f in sorted(glob.glob(os.path.join(exp, "*.safetensors"))):
        tensors.update(read_safetensors(f))
    man = json.load(open(os.path.join(ck, "manifest.json")))
    nlin = 0
    bad = 0
    zz = 0
    total = 0
    for fe in man["files"]:
        with h5py.File(os.path.join(ck, fe["file"]), "r") as h:
            for b in range(fe["first_block"], fe["first_block"] + fe["nblocks"]):
                for mod in [k for k in h["layers"][str(b)].keys()]:
                    g = h["layers"][str(b)][mod]
                    codes = g["codes"][...]
                    scales = g["scales"][...].astype(np.float32)
                    zeros = g["zeros"][...].astype(np.float32)
                    gidx = g["g_idx"][...]
                    out, inn = codes.shape
                    pre = "model.layers.%d.%s." % (b, mod)
                    qw, qz = tensors[pre + "qweight"], tensors[pre + "qzeros"]
                    sc, gi = tensors[pre + "scales"], tensors[pre + "g_idx"]
                    assert qw.shape == (inn * bits // 32, out), (pre, qw.shape)
                    assert qz.shape == (scales.shape[1], out * bits // 32), (pre, qz.shape)
                    assert sc.shape == (scales.shape[1], out) and sc.dtype == np.float16
                    assert np.array_equal(gi, gidx), pre + "g_idx"
                    c = unpack(qw, bits, inn)                      # [out, in]
                    # qzeros row k = group k's bitstream over output channels
                    z = unpack(qz.T, bits, out).astype(np.float32) + 1  # [groups, out]
                    w_exp = sc.astype(np.float32)[gi, np.arange(out)[:, None]] * (c.astype(np.float32) - z[gi, np.arange(out)[:, None]])
                    s16 = scales.astype(np.float16).astype(np.float32)
                    w_ck = s16[:, gidx] * (codes.astype(np.float32) - zeros[:, gidx])
                    zero0 = (zeros[:, gidx] == 0)
                    diff = (w_exp != w_ck) & ~zero0
                    bad += int(diff.sum())
                    zz += int(zero0.sum())
                    total += w_ck.size
                    nlin += 1
    print("export_check: %d linears, %d weights, %d differ, %d at zero point 0 (not representable in v1)"
          % (nlin, total, bad, zz))
    # 7 per dense block; MoE blocks: q/k/v/o + 3 per expert (+ shared)
    from moe_ref import expected_linears
    n_expected = expected_linears(cfg, man["nblocks"])
    if nlin != n_expected or bad != 0:
        print("FAIL (expected %d linears)" % n_expected)
        sys.exit(1)
    print("export_check: 1 passed, 0 failed")


if __name__ == "__main__":
    main()

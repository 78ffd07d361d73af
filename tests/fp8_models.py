#!/usr/bin/python3
"""Synthesize FP8 checkpoints of a small Llama model the way other tools ship
them, plus the f32 model each one dequantizes to, for `eval --model` and
`quantize --model` tests.

Written from the OCP 8-bit floating point specification (v1.0) and the
published checkpoint layouts, not from mpiquant's C:
  E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa bits; exponent 0 is
    subnormal (m/8 * 2^-6); S.1111.111 is NaN, no infinities; max 448.
  E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa bits, IEEE-like (exponent
    31: inf / NaN); max 57344.
  Encoding: round to nearest representable value, ties to the even code
  (even mantissa), saturating to +-max.
Layouts (each linear weight W [out, in] of every block; everything else is
copied as it is):
  channel  compressed-tensors float-quantized, strategy channel, dynamic
           per-token FP8 activations (FP8_DYNAMIC); channel-w: the same
           weights, no activation quantization:
           X F8_E4M3, X_scale F32 [out, 1] = absmax(row) / 448
  tensor   ModelOpt-style per-tensor scale, no quantization_config, E5M2:
           X F8_E5M2, X_scale F32 [] = absmax / 57344
  block    compressed-tensors float-quantized, strategy block, block
           structure [BR, BC] (partial edge blocks): X_scale BF16
           [ceil(out/BR), ceil(in/BC)]
  deepseek DeepSeek-V3 layout (quant_method fp8, weight_block_size [128,128],
           activation_scheme dynamic: per token and group of 128 features):
           X F8_E4M3, X_scale_inv F32 [ceil(out/128), ceil(in/128)], w = q * s
The dequantized model ("<kind>-f32") holds w = decode(q) * scale in float32
(decode is exact; the product one float32 rounding).

usage: fp8_models.py SRC_MODEL_DIR OUT_DIR   (writes OUT_DIR/<kind>{,-f32})
       fp8_models.py --broken FP8_MODEL_DIR OUT_DIR  (damaged copies, see broken())
"""
import json, os, shutil, struct, sys

import numpy as np

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
BLOCK = (32, 32)  # compressed-tensors block variant: several blocks per row and column


def fp8_table(ebits, mbits):
    """value of each of the 256 codes (NaN for NaN codes, inf for infinities)"""
    bias = (1 << (ebits - 1)) - 1
    vals = np.zeros(256, np.float64)
    for c in range(256):
        s = -1.0 if c & 0x80 else 1.0
        e = (c >> mbits) & ((1 << ebits) - 1)
        m = c & ((1 << mbits) - 1)
        if ebits == 4 and e == 15 and m == 7:
            v = np.nan
        elif ebits == 5 and e == 31:
            v = np.inf if m == 0 else np.nan
        elif e == 0:
            v = m / (1 << mbits) * 2.0 ** (1 - bias)
        else:
            v = (1 + m / (1 << mbits)) * 2.0 ** (e - bias)
        vals[c] = s * v
    return vals


E4M3, E5M2 = fp8_table(4, 3), fp8_table(5, 2)


def encode(x, table):
    """nearest code, ties to the even code, saturating"""
    pos = [c for c in range(128) if np.isfinite(table[c])]
    pv = table[pos]
    order = np.argsort(pv)
    pv, pc = pv[order], np.array(pos)[order]
    a = np.minimum(np.abs(x.astype(np.float64)), pv[-1])
    hi = np.clip(np.searchsorted(pv, a), 1, len(pv) - 1)
    lo = hi - 1
    dlo, dhi = a - pv[lo], pv[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (pc[hi] % 2 == 0))
    code = np.where(pick_hi, pc[hi], pc[lo]).astype(np.uint8)
    return np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)


def self_test():
    for v, t in ((E4M3, "E4M3"), (E5M2, "E5M2")):
        fin = np.isfinite(v)
        codes = np.arange(256)[fin]
        back = encode(v[fin].astype(np.float32), v)
        assert np.array_equal(back, codes.astype(np.uint8)), t
    assert E4M3[0x7E] == 448 and np.isnan(E4M3[0x7F]) and E5M2[0x7B] == 57344
    assert encode(np.array([1e9, -1e9, 449.0]), E4M3).tolist() == [0x7E, 0xFE, 0x7E]
    # 1 + 1/16 is halfway between 1 (code 0x38) and 1.125 (0x39): ties to even
    assert encode(np.array([1.0625, 1.1875]), E4M3).tolist() == [0x38, 0x3A]


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    meta = hdr.pop("__metadata__", None)
    dt = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32, "I64": np.int64,
          "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}
    out = {}
    for k, v in hdr.items():
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], np.frombuffer(b[8 + n + s:8 + n + e], dt[v["dtype"]]).reshape(v["shape"]))
    return out, meta


def write_st(path, tensors):
    """tensors: name -> (dtype name, numpy array of the stored bytes' type)"""
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        dt, a = tensors[k]
        by = np.ascontiguousarray(a).tobytes()
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(by)]}
        blobs.append(by)
        off += len(by)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def bf16(x):
    """float32 -> bf16 bits, round to nearest even (scales stored as BF16)"""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(h):
    return (h.astype(np.uint32) << 16).view(np.float32)


def blocks(w, br, bc):
    out, inn = w.shape
    nr, nc = -(-out // br), -(-inn // bc)
    s = np.zeros((nr, nc), np.float32)
    for i in range(nr):
        for j in range(nc):
            s[i, j] = np.abs(w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]).max()
    return s, np.repeat(np.repeat(s, br, 0)[:out], bc, 1)[:, :inn]


def quantize(kind, w):
    """-> stored tensors (suffix -> (dtype, array)) and the f32 dequantization"""
    if kind in ("channel", "channel-w"):
        s = (np.abs(w).max(1, keepdims=True) / np.float32(448)).astype(np.float32)
        q = encode(w / s, E4M3)
        return {"": ("F8_E4M3", q), "_scale": ("F32", s)}, (E4M3[q].astype(np.float32) * s)
    if kind == "tensor":
        s = np.float32(np.abs(w).max() / np.float32(57344))
        q = encode(w / s, E5M2)
        return {"": ("F8_E5M2", q), "_scale": ("F32", np.array(s, np.float32))}, \
            (E5M2[q].astype(np.float32) * s)
    br, bc = BLOCK if kind == "block" else (128, 128)
    s, full = blocks(w, br, bc)
    s = (s / np.float32(448)).astype(np.float32)
    if kind == "block":  # scales stored as BF16: quantize with the stored value
        sb = bf16(s)
        s = from_bf16(sb)
    full = np.repeat(np.repeat(s, br, 0)[:w.shape[0]], bc, 1)[:, :w.shape[1]]
    q = encode(w / full, E4M3)
    deq = (E4M3[q].astype(np.float32) * full).astype(np.float32)
    if kind == "block":
        return {"": ("F8_E4M3", q), "_scale": ("BF16", sb)}, deq
    return {"": ("F8_E4M3", q), "_scale_inv": ("F32", s)}, deq


def qconfig(kind):
    if kind == "tensor":
        return None
    if kind == "deepseek":
        return {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                "weight_block_size": [128, 128]}
    w = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False,
         "strategy": "block" if kind == "block" else "channel", "group_size": None,
         "block_structure": list(BLOCK) if kind == "block" else None}
    a = None if kind != "channel" else {"num_bits": 8, "type": "float", "symmetric": True,
                                        "dynamic": True, "strategy": "token"}
    return {"quant_method": "compressed-tensors", "format": "float-quantized",
            "quantization_status": "compressed", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": w,
                                          "input_activations": a}}}


def broken(src, out):
    """damaged copies of the FP8 model SRC for the error tests:
    noscale (q_proj's scale removed), i32scale (scale dtype I32),
    badshape (a [3, 1] scale for a [64, 64] weight)"""
    T, _ = read_st(os.path.join(src, "model.safetensors"))
    sn = "model.layers.1.self_attn.q_proj.weight_scale"
    for kind in ("noscale", "i32scale", "badshape"):
        t = dict(T)
        if kind == "noscale":
            del t[sn]
        elif kind == "i32scale":
            t[sn] = ("I32", np.ones(t[sn][1].shape, np.int32))
        else:
            t[sn] = ("F32", np.ones((3, 1), np.float32))
        p = os.path.join(out, kind)
        shutil.copytree(src, p)
        write_st(os.path.join(p, "model.safetensors"), t)


def main():
    if sys.argv[1] == "--broken":
        return broken(*sys.argv[2:4])
    self_test()
    src, out = sys.argv[1:3]
    T, _ = read_st(os.path.join(src, "model.safetensors"))
    cfg = json.load(open(os.path.join(src, "config.json")))
    for kind in ("channel", "channel-w", "tensor", "block", "deepseek"):
        q8, f32 = {}, {}
        for name, (dt, a) in T.items():
            parts = name.split(".")
            if name.endswith(".weight") and ".".join(parts[3:5]) in LINEARS:
                w = a.astype(np.float32)
                stored, deq = quantize(kind, w)
                for suf, v in stored.items():
                    q8[name + suf] = v
                f32[name] = ("F32", deq.astype(np.float32))
            else:
                q8[name] = f32[name] = (dt, a)
        for d, tens, qc in ((kind, q8, qconfig(kind)), (kind + "-f32", f32, None)):
            p = os.path.join(out, d)
            os.makedirs(p, exist_ok=True)
            c = dict(cfg)
            c.pop("quantization_config", None)
            if qc:
                c["quantization_config"] = qc
            json.dump(c, open(os.path.join(p, "config.json"), "w"), indent=2)
            write_st(os.path.join(p, "model.safetensors"), tens)
            for f in ("tokenizer.json", "tokenizer_config.json"):
                if os.path.exists(os.path.join(src, f)):
                    shutil.copy(os.path.join(src, f), p)
    print("fp8_models: E4M3/E5M2 codecs checked on all 256 codes; wrote channel, channel-w, "
          "tensor, block, deepseek (+ -f32) to %s" % out)


if __name__ == "__main__":
    main()

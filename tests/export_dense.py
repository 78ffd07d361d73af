#!/usr/bin/python3
"""Write the dense f32 model a GPTQ v1 export stands for, independently of
mpiquant's reader: every linear's qweight/qzeros/scales/g_idx unpacked with
tests/export_check.py's numpy unpacker (written from the format
description) into W[o, i] = scales[g, o] * (q[o, i] - (qzero[g, o] + 1)),
g = g_idx[i] (float32), other tensors copied, config.json without
quantization_config, tokenizer files copied. `mpiquant eval --model EXPORT`
must then give exactly the NLL of `mpiquant eval --model DENSE`.

usage: export_dense.py EXPORT_DIR DENSE_DIR
"""
import glob, json, os, shutil, struct, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import read_safetensors, unpack  # noqa: E402

ST = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int32"): "I32",
      np.dtype("uint16"): "BF16", np.dtype("uint8"): "U8", np.dtype("int64"): "I64"}


def write_safetensors(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        hdr[k] = {"dtype": ST[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                  "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    exp, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(exp, "config.json")))
    qc = cfg.pop("quantization_config")
    assert qc["quant_method"] == "gptq" and qc.get("checkpoint_format", "gptq") == "gptq", qc
    bits = qc["bits"]
    T = {}
    for f in sorted(glob.glob(os.path.join(exp, "*.safetensors"))):
        T.update(read_safetensors(f))
    dense, n = {}, 0
    for k, v in T.items():
        if k.endswith(".qweight"):
            p = k[:-len("qweight")]
            gi = T[p + "g_idx"]
            inn, out_ = gi.shape[0], v.shape[1]
            c = unpack(v, bits, inn).astype(np.float32)                 # [out, in]
            z = unpack(T[p + "qzeros"].T, bits, out_).astype(np.float32) + 1  # [groups, out]
            sc = T[p + "scales"].astype(np.float32)                      # [groups, out]
            o = np.arange(out_)[:, None]
            dense[p + "weight"] = (sc[gi[None, :], o] * (c - z[gi[None, :], o])).astype(np.float32)
            n += 1
        elif not k.endswith((".qzeros", ".scales", ".g_idx")):
            dense[k] = np.array(v)
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), dense)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        if os.path.exists(os.path.join(exp, f)):
            shutil.copy(os.path.join(exp, f), out)
    print("export_dense: %d linears dequantized to %s" % (n, out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write a copy of a small tied-embedding Llama model (f32 safetensors, HF
layout) with its vocabulary grown to V rows, for checks of the vocab-sharded
output head: rows [0, v) are the model's, row SHIFT + k is an exact copy of
row k for even k (its logit ties the original's: the argmax must resolve to
the lower index, k, across ranks), every other new row is zero.
  vocab_expand.py SRC_DIR DST_DIR V SHIFT"""
import json, os, shutil, struct, sys

import numpy as np

src, dst, V, shift = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(os.path.join(src, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    data = f.read()
meta = hdr.pop("__metadata__", None)
cfg = json.load(open(os.path.join(src, "config.json")))
assert cfg.get("tie_word_embeddings", False), "expects a tied embedding"
out = {}
for name, t in hdr.items():
    assert t["dtype"] == "F32", (name, t["dtype"])
    a, b = t["data_offsets"]
    out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"])
E = out["model.embed_tokens.weight"]
v, H = E.shape
assert shift >= v and shift + v <= V, (v, shift, V)
big = np.zeros((V, H), dtype="<f4")
big[:v] = E
big[shift:shift + v:2] = E[0::2]
out["model.embed_tokens.weight"] = big
os.makedirs(dst, exist_ok=True)
hdr2, off, blobs = {}, 0, []
for name in sorted(out):
    b = np.ascontiguousarray(out[name], dtype="<f4").tobytes()
    hdr2[name] = {"dtype": "F32", "shape": list(out[name].shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
if meta is not None:
    hdr2["__metadata__"] = meta
h = json.dumps(hdr2).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for b in blobs:
        f.write(b)
cfg["vocab_size"] = V
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
for extra in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    if os.path.exists(os.path.join(src, extra)):
        shutil.copy(os.path.join(src, extra), os.path.join(dst, extra))

#!/usr/bin/env python3
"""A tiny Mixtral made of a real dense model's weights (sparse upcycling,
Komatsuzaki et al. 2022): every expert of block l is a copy of the dense
model's MLP of block l, the router of each block is random (seeded).
Mixtral renormalises the top-k weights to sum 1, so the MoE block computes
exactly the dense MLP: the fp model's perplexity is the dense model's, while
each expert sees its own routed tokens (AWQ searches them separately).

  moe_upcycle.py DENSE_DIR OUT_DIR [EXPERTS [TOP_K [SEED]]]

Writes OUT_DIR/config.json (MixtralForCausalLM), model.safetensors (f32) and
copies the tokenizer files.
"""
import json, os, shutil, struct, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moe_ref import load_tensors


def write_safetensors(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k], dtype="<f4")
        b = a.tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    src, out = sys.argv[1], sys.argv[2]
    E = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    k = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 7
    c = json.load(open(src + "/config.json"))
    T = load_tensors(src)
    H, L = c["hidden_size"], c["num_hidden_layers"]
    r = np.random.default_rng(seed)
    o = {}
    for name, v in T.items():
        if ".mlp." not in name:
            o[name] = v
    if "lm_head.weight" not in o and c.get("tie_word_embeddings", False):
        o["lm_head.weight"] = T["model.embed_tokens.weight"]
    for l in range(L):
        p = "model.layers.%d." % l
        for e in range(E):
            q = p + "block_sparse_moe.experts.%d." % e
            o[q + "w1.weight"] = T[p + "mlp.gate_proj.weight"]
            o[q + "w3.weight"] = T[p + "mlp.up_proj.weight"]
            o[q + "w2.weight"] = T[p + "mlp.down_proj.weight"]
        o[p + "block_sparse_moe.gate.weight"] = r.standard_normal((E, H)) / np.sqrt(H) * 4.0
    cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
           "hidden_size": H, "intermediate_size": c["intermediate_size"],
           "num_attention_heads": c["num_attention_heads"],
           "num_key_value_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
           "head_dim": c.get("head_dim", H // c["num_attention_heads"]),
           "num_hidden_layers": L, "vocab_size": c["vocab_size"],
           "max_position_embeddings": c["max_position_embeddings"],
           "rms_norm_eps": c.get("rms_norm_eps", 1e-5), "rope_theta": c.get("rope_theta", 1e4),
           "num_local_experts": E, "num_experts_per_tok": k, "tie_word_embeddings": False,
           "bos_token_id": c.get("bos_token_id", 1), "eos_token_id": c.get("eos_token_id", 2),
           "torch_dtype": "float32"}
    os.makedirs(out, exist_ok=True)
    json.dump(cfg, open(out + "/config.json", "w"), indent=1)
    write_safetensors(out + "/model.safetensors", o)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(out, f))
    print("%s: Mixtral, %d blocks x %d experts (top-%d), experts = the dense MLP" % (out, L, E, k))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Independent check of a SmoothQuant W8A8 checkpoint (stories260K).

Written from the golden README's conventions, not from the C code: a numpy
Llama forward of the fp32, unsmoothed model over the calibration windows
(golden calib ids) gives the activation maxima a_j at the inputs of q_proj
and gate_proj of every block; then, in float32,
  w_j = max(max over the rows of q,k,v (gate,up) of |W_ij|, 1e-5)
  s_j = max(a_j^alpha / w_j^(1-alpha), 1e-5)
  norm' = norm / s ; W' = W * s (columns) ; o_proj, down_proj unchanged
  int8 per output channel: d = max(max_j |w'_ij|, 1e-5) / 127,
  code = rint(w' / d) + 128.
Checks per block: factors recovered from the checkpoint's norms (norm/norm')
within 1e-5 relative of numpy's s; scales within 1e-5 relative; codes
identical except near rounding ties (>= 99.9 %, never off by more than 1);
o_proj and down_proj (independent of the activations) exactly identical.

usage: sq_check.py MODEL_DIR CALIB_IDS_TXT CKPT_DIR ALPHA
"""
import json, os, struct, subprocess, sys, tempfile

import numpy as np


class H5:
    """Datasets of an HDF5 file through h5dump's binary output (no h5py
    needed; HDF5_PLUGIN_PATH must point to the zstd plugin)."""
    def __init__(self, path):
        self.path = path
        self.tmp = tempfile.mkdtemp()

    def read(self, ds, dtype, shape):
        out = os.path.join(self.tmp, "d.bin")
        subprocess.run(["h5dump", "-d", ds, "-b", "LE", "-o", out, self.path],
                       check=True, stdout=subprocess.DEVNULL)
        a = np.fromfile(out, dtype=dtype)
        return a.reshape(shape)


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop("__metadata__", None)
    out = {}
    for k, v in hdr.items():
        assert v["dtype"] == "F32", k
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(v["shape"])
    return out


def rmsnorm(x, w, eps):
    ms = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
    return ((x / np.sqrt(ms + eps)).astype(np.float32) * w).astype(np.float32)


def rope(x, cos, sin):  # x [T, nh, hd], rotate_half
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1).astype(np.float32)


def f32pow(x, e):
    if e == 0.0:
        return np.ones_like(x)
    if e == 0.5:
        return np.sqrt(x)
    return np.power(x, np.float32(e))


def main():
    mdir, calib, ck, alpha = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    W = read_st(os.path.join(mdir, "model.safetensors"))
    H, nq, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, nl = cfg["rms_norm_eps"], cfg["num_hidden_layers"]
    ids = np.array([[int(t) for t in l.split()] for l in open(calib) if l.strip()])
    nw, L = ids.shape
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(L)[:, None] * inv[None, :]
    cos = np.cos(ang).astype(np.float32)[:, None, :]
    sin = np.sin(ang).astype(np.float32)[:, None, :]
    mask = np.triu(np.full((L, L), -np.inf, np.float32), 1)
    x = W["model.embed_tokens.weight"][ids]  # [nw, L, H]
    man = json.load(open(os.path.join(ck, "manifest.json")))
    assert man["options"].get("act_bits") == 8, "checkpoint does not record int8 activations"
    files = {e["block"]: e["file"] for e in man["completed_blocks"]}
    fails = 0
    for l in range(nl):
        p = "model.layers.%d." % l
        g = lambda n: W[p + n]
        a_qkv = np.zeros(H, np.float32)
        a_gu = np.zeros(H, np.float32)
        out = np.empty_like(x)
        for w in range(nw):
            xw = x[w]
            xn = rmsnorm(xw, g("input_layernorm.weight"), eps)
            a_qkv = np.maximum(a_qkv, np.abs(xn).max(0))
            q = rope((xn @ g("self_attn.q_proj.weight").T).reshape(L, nq, hd), cos, sin)
            k = rope((xn @ g("self_attn.k_proj.weight").T).reshape(L, nkv, hd), cos, sin)
            v = (xn @ g("self_attn.v_proj.weight").T).reshape(L, nkv, hd)
            rep = nq // nkv
            k = np.repeat(k, rep, 1); v = np.repeat(v, rep, 1)
            sc = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / np.float32(np.sqrt(hd)) + mask  # [h, q, k]
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc = (sc / sc.sum(-1, keepdims=True)).astype(np.float32)
            att = np.matmul(sc, v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(L, nq * hd)
            h1 = xw + att @ g("self_attn.o_proj.weight").T
            h1n = rmsnorm(h1, g("post_attention_layernorm.weight"), eps)
            a_gu = np.maximum(a_gu, np.abs(h1n).max(0))
            gt = h1n @ g("mlp.gate_proj.weight").T
            act = (gt / (1 + np.exp(-gt))) * (h1n @ g("mlp.up_proj.weight").T)
            out[w] = h1 + act.astype(np.float32) @ g("mlp.down_proj.weight").T
        x = out
        f = H5(os.path.join(ck, files[l]))
        pre = "/layers/%d/" % l
        for norm, lins, a in (("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], a_qkv),
                              ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"], a_gu),
                              (None, ["self_attn.o_proj"], None), (None, ["mlp.down_proj"], None)):
            if norm:
                wmax = np.maximum(np.max([np.abs(g(n + ".weight")).max(0) for n in lins], 0), np.float32(1e-5))
                s = np.maximum(f32pow(a, alpha) / f32pow(wmax, 1.0 - alpha), np.float32(1e-5)).astype(np.float32)
                n0 = g(norm + ".weight")
                n1 = f.read("/norms/%d/%s" % (l, norm), "<f4", (H,))
                rel = np.abs(n0 / n1 - s) / s
                ok = rel.max() <= 1e-5
                print("block %d %s: smoothing factors max rel diff %.2e %s" % (l, norm, rel.max(), "ok" if ok else "FAIL"))
                fails += not ok
            else:
                s = np.ones(g(lins[0] + ".weight").shape[1], np.float32)
            for n in lins:
                wq = (g(n + ".weight") * s).astype(np.float32)
                d = (np.maximum(np.abs(wq).max(1), np.float32(1e-5)) / np.float32(127)).astype(np.float32)
                code = (np.rint(wq / d[:, None]) + 128).astype(np.int64)
                o_, i_ = wq.shape
                c_ck = f.read(pre + n + "/codes", "u1", (o_, i_)).astype(np.int64)
                sc_ck = f.read(pre + n + "/scales", "<f4", (o_, 1))[:, 0]
                z_ck = f.read(pre + n + "/zeros", "<f4", (o_, 1))
                same = (code == c_ck).mean()
                srel = (np.abs(sc_ck - d) / d).max()
                exact = norm is None
                ok = (np.all(z_ck == 128) and np.abs(code - c_ck).max() <= 1 and
                      (same == 1.0 and srel == 0.0 if exact else same >= 0.999 and srel <= 1e-5))
                print("block %d %-17s codes identical %.4f%%, scales max rel %.2e %s"
                      % (l, n, 100 * same, srel, "ok" if ok else "FAIL"))
                fails += not ok
    print("sq_check: %s" % ("all ok" if not fails else "%d FAILED" % fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Independent check of an LLM.int8() checkpoint (stories260K), written from
the paper's definitions (Dettmers et al. 2022, "LLM.int8()": vector-wise
absmax int8 for weight rows and activation rows, input feature columns with
a magnitude >= threshold computed in 16 bit) and docs/methods.md, not from
the C code.

1. Outlier columns: a numpy fp32 Llama forward of the calibration windows
   (the unquantized model, block by block) gives, at the inputs of q_proj,
   o_proj, gate_proj and down_proj of every block, the columns j with
   |x_tj| >= threshold for some token t.  They must equal the checkpoint's
   /aux/{block}/{linear}.outlier_cols, except columns whose numpy maximum is
   within TIE_REL of the threshold (forward rounding decides those).
2. Weights: int8 absmax per output row, d = max(absmax, 1e-5) / 127,
   code = rint(w / d) + 128 (weight-only: absmax over the non-outlier
   columns, outlier columns code 128 and their fp16 value in the sparse
   part): codes, scales and sparse values identical.
3. Perplexity (W8A8 only): numpy forward of the eval windows with the
   checkpoint's dequantized weights and, at every linear input of its
   quantized blocks, per token: outlier columns (calibration set, or
   |x| >= threshold in that token) in fp16, the others int8 absmax over the
   non-outlier columns; ppl within PPL_REL (all blocks) or PPL_REL_1 (one
   block) of mpiquant's and within FP_REL of the fp model's.

usage: llm_int8_ref.py MODEL_DIR CALIB_TXT CKPT_DIR EVAL_IDS_TXT PPL_FP PPL_CKPT
"""
import json, os, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sq_check import H5, read_st, rmsnorm, rope  # noqa: E402

TIE_REL = 1e-4   # |max|x| - tau| / tau below which a column may go either way
# numpy vs mpiquant eval: one int8 rounding that flips because the two
# forwards sum in another order changes that value by a whole step, and the
# difference grows through the later blocks.  Measured: numpy's own ppl
# under relative 1e-6 input noise at every linear (4 seeds, tau 6, 8 eval
# windows) spreads 3.7508..3.7554 around 3.7532 (max 6e-4 relative).
PPL_REL = 2e-3
FP_REL = 5e-3    # the bar: W8A8 LLM.int8() within 0.5 % of fp
# With one quantized block (quantize --layers 4:5) the flips stay in that
# block: numpy's spread under the same 1e-6 noise is 3.0e-5 / 3.4e-5 (1 and
# 16 calibration windows, 3 seeds each); mpiquant differed by 2e-6..2.3e-5.
# What this bound can see (numpy, block 4, tau 6): no hook (W8 only) 2.4e-4,
# no calibration set 2.2e-4, outliers not fp16-rounded 2.5e-4 (16 windows);
# no dynamic detection 1.9e-4 (1 window).
PPL_REL_1 = 1e-4

GROUPS = [("self_attn.q_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
          ("self_attn.o_proj", ["self_attn.o_proj"]),
          ("mlp.gate_proj", ["mlp.gate_proj", "mlp.up_proj"]),
          ("mlp.down_proj", ["mlp.down_proj"])]


class Model:
    def __init__(self, mdir):
        self.cfg = c = json.load(open(os.path.join(mdir, "config.json")))
        self.W = read_st(os.path.join(mdir, "model.safetensors"))
        self.H, self.nq, self.nkv, self.hd = (c["hidden_size"], c["num_attention_heads"],
                                              c["num_key_value_heads"], c["head_dim"])
        self.eps, self.nl = c["rms_norm_eps"], c["num_hidden_layers"]

    def tables(self, L):
        inv = 1.0 / self.cfg["rope_theta"] ** (np.arange(0, self.hd, 2) / self.hd)
        ang = np.arange(L)[:, None] * inv[None, :]
        mask = np.triu(np.full((L, L), -np.inf, np.float32), 1)
        return (np.cos(ang).astype(np.float32)[:, None, :],
                np.sin(ang).astype(np.float32)[:, None, :], mask)

    def block(self, l, xw, lin, act, tabs):
        """One window through block l; lin(name) the weight, act(g, x) the
        transform at the input of group g; returns (out, group inputs)."""
        cos, sin, mask = tabs
        L, nq, nkv, hd = xw.shape[0], self.nq, self.nkv, self.hd
        p = "model.layers.%d." % l
        ins = []
        xn = rmsnorm(xw, self.W[p + "input_layernorm.weight"], self.eps)
        ins.append(xn); xi = act(0, xn)
        q = rope((xi @ lin(l, "self_attn.q_proj").T).reshape(L, nq, hd), cos, sin)
        k = rope((xi @ lin(l, "self_attn.k_proj").T).reshape(L, nkv, hd), cos, sin)
        v = (xi @ lin(l, "self_attn.v_proj").T).reshape(L, nkv, hd)
        k = np.repeat(k, nq // nkv, 1); v = np.repeat(v, nq // nkv, 1)
        sc = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / np.float32(np.sqrt(hd)) + mask
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc = (sc / sc.sum(-1, keepdims=True)).astype(np.float32)
        att = np.matmul(sc, v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(L, nq * hd)
        ins.append(att)
        h1 = xw + act(1, att) @ lin(l, "self_attn.o_proj").T
        h1n = rmsnorm(h1, self.W[p + "post_attention_layernorm.weight"], self.eps)
        ins.append(h1n); hi = act(2, h1n)
        gt = hi @ lin(l, "mlp.gate_proj").T
        a = ((gt / (1 + np.exp(-gt))) * (hi @ lin(l, "mlp.up_proj").T)).astype(np.float32)
        ins.append(a)
        return (h1 + act(3, a) @ lin(l, "mlp.down_proj").T).astype(np.float32), ins

    def nll(self, x):
        """Per-window NLL of positions 2..L given final hidden states x [L, H]."""
        emb = self.W["model.embed_tokens.weight"]
        head = self.W.get("lm_head.weight", emb)
        return rmsnorm(x, self.W["model.norm.weight"], self.eps) @ head.T


def windows(path):
    return np.array([[int(t) for t in l.split()] for l in open(path) if l.strip()])


def fp16(x):
    return x.astype(np.float16).astype(np.float32)


def decompose(x, cal, tau):
    """Per token: outlier columns in fp16, the rest int8 absmax."""
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        o = cal | (np.abs(x[t]) >= tau)
        rest = np.where(o, np.float32(0), np.abs(x[t]))
        mx = rest.max()
        d = np.float32(mx) / np.float32(127)
        q = np.rint(x[t] / d) * d if mx > 0 else np.zeros_like(x[t])
        out[t] = np.where(o, fp16(x[t]), q.astype(np.float32))
    return out


def main():
    mdir, calib, ck, evf = sys.argv[1:5]
    ppl_fp, ppl_ck = float(sys.argv[5]), float(sys.argv[6])
    M = Model(mdir)
    man = json.load(open(os.path.join(ck, "manifest.json")))
    opt = man["options"]["llm_int8"]
    tau, wonly = np.float32(opt["threshold"]), bool(opt["weight_only"])
    files = {e["block"]: e["file"] for e in man["completed_blocks"]}
    qblocks = sorted(files)  # quantize --layers A:B: the other blocks stay fp
    fails = 0

    # 1. calibration outlier columns from the fp stream
    ids = windows(calib)
    tabs = M.tables(ids.shape[1])
    x = M.W["model.embed_tokens.weight"][ids]
    cal = {}
    for l in range(M.nl):
        mx = None
        out = np.empty_like(x)
        for w in range(x.shape[0]):
            out[w], ins = M.block(l, x[w], lambda l_, n: M.W["model.layers.%d.%s.weight" % (l_, n)],
                                  lambda g, a: a, tabs)
            m = [np.abs(a).max(0) for a in ins]
            mx = m if mx is None else [np.maximum(u, v) for u, v in zip(mx, m)]
        x = out
        if l not in files:
            continue
        f = H5(os.path.join(ck, files[l]))
        for g, (first, _) in enumerate(GROUPS):
            ref = mx[g] >= tau
            got = f.read("/aux/%d/%s.outlier_cols" % (l, first), "<f4", (len(ref), 1))[:, 0] != 0
            diff = np.nonzero(ref != got)[0]
            near = np.abs(mx[g][diff] - tau) <= TIE_REL * tau
            ok = bool(near.all())
            print("block %d %-17s outlier columns: numpy %d, checkpoint %d, differ %d (near tau %d) %s"
                  % (l, first, ref.sum(), got.sum(), len(diff), near.sum(), "ok" if ok else "FAIL"))
            fails += not ok
            cal[(l, g)] = got

    # 2. weights
    deq = {}
    for l in qblocks:
        f = H5(os.path.join(ck, files[l]))
        for g, (_, lins) in enumerate(GROUPS):
            for n in lins:
                w = M.W["model.layers.%d.%s.weight" % (l, n)]
                o_, i_ = w.shape
                c = cal[(l, g)] if wonly else np.zeros(i_, bool)
                wz = np.where(c[None, :], np.float32(0), w)
                d = (np.maximum(np.abs(wz).max(1), np.float32(1e-5)) / np.float32(127)).astype(np.float32)
                code = (np.rint(wz / d[:, None]) + 128).astype(np.int64)
                pre = "/layers/%d/%s/" % (l, n)
                c_ck = f.read(pre + "codes", "u1", (o_, i_)).astype(np.int64)
                s_ck = f.read(pre + "scales", "<f4", (o_, 1))[:, 0]
                q = (s_ck[:, None] * (c_ck - np.float32(128))).astype(np.float32)
                ok = np.array_equal(code, c_ck) and np.array_equal(s_ck, d)
                nsp = int(c.sum()) * o_
                if wonly and nsp:
                    idx = f.read(pre + "outliers_idx", "<i8", (nsp,))
                    val = f.read(pre + "outliers_val", "<f4", (nsp,))
                    r_, j_ = np.nonzero(np.broadcast_to(c[None, :], w.shape))
                    ok = ok and np.array_equal(idx, r_ * i_ + j_) and np.array_equal(val, fp16(w[r_, j_]))
                    q.reshape(-1)[idx] += val
                deq[(l, n)] = q
                if not ok:
                    print("block %d %s: codes/scales/sparse part differ FAIL" % (l, n))
                fails += not ok
    print("weights: %d linears checked" % len(deq))

    # 3. perplexity of the decomposition
    if not wonly:
        ev = windows(evf)
        tabs = M.tables(ev.shape[1])
        nll, cnt = 0.0, 0
        for w in range(ev.shape[0]):
            xw = M.W["model.embed_tokens.weight"][ev[w]]
            for l in range(M.nl):
                if l in files:
                    xw, _ = M.block(l, xw, lambda l_, n: deq[(l_, n)],
                                    lambda g, a, l=l: decompose(a, cal[(l, g)], tau), tabs)
                else:
                    xw, _ = M.block(l, xw, lambda l_, n: M.W["model.layers.%d.%s.weight" % (l_, n)],
                                    lambda g, a: a, tabs)
            lg = M.nll(xw).astype(np.float64)
            lg -= lg.max(1, keepdims=True)
            lp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
            nll -= lp[np.arange(ev.shape[1] - 1), ev[w, 1:]].sum()
            cnt += ev.shape[1] - 1
        ppl = float(np.exp(nll / cnt))
        r1, r2 = abs(ppl - ppl_ck) / ppl, abs(ppl_ck - ppl_fp) / ppl_fp
        tol = PPL_REL if len(qblocks) > 1 else PPL_REL_1
        ok = r1 <= tol and r2 <= FP_REL
        print("ppl: numpy %.7f, mpiquant %.7f (rel %.1e <= %.0e), fp %.6f (rel %.1e <= %.0e) %s"
              % (ppl, ppl_ck, r1, tol, ppl_fp, r2, FP_REL, "ok" if ok else "FAIL"))
        fails += not ok
    print("llm_int8_ref: %s" % ("all ok" if not fails else "%d FAILED" % fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

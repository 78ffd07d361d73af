#!/usr/bin/python3
"""Layer objectives of quantized checkpoints on calibration and held-out
windows (the QuantEase model-level study, docs/methods.md "QuantEase").

For every checkpoint, a numpy fp32 forward of the *quantized* model (its
dequantized weights incl. sparse outliers) over the windows of each token
file gives, at every linear, the inputs X the quantizer saw during
true-sequential quantization (block l, group g: the blocks before it and the
groups before g already quantized).  Per linear and file it prints

    f(Q) = (1/N) ||(W - Q) X^T||_F^2     (N = windows; the undamped form of
                                          the GPTQ/QuantEase proxy loss
                                          1/2 tr((W-Q) H (W-Q)^T), H = 2/N X^T X)

and, per block, the mean squared error of the block output against the fp
model on the same windows (the model-level effect of the layer errors), and at the head the mean
KL(fp || quantized) of the next-token distribution and NLL(q) - NLL(fp).
With the calibration file first and a held-out file second, the ratio
held-out / calibration of two methods' sums shows whether one of them fits
the calibration windows better than it generalises.

usage: quantease_heldout.py MODEL_DIR TOKENS_A.txt[:K] TOKENS_B.txt[:K] CKPT...
       (TOKENS: one window per line; :K = only the first K windows)
Prints one line per (checkpoint, file, block) and a summary per checkpoint.
HDF5_PLUGIN_PATH must name the zstd filter plugin (build/h5plugin).
"""
import json, os, sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sq_check import read_st, rmsnorm, rope  # noqa: E402

PERCDAMP = 0.01
LIN = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
       ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]


def windows(spec):
    path, _, k = spec.partition(":")
    w = np.array([[int(t) for t in l.split()] for l in open(path) if l.strip()])
    return w[:int(k)] if k else w


def dequant(ck):
    """{(block, linear): Q} from a checkpoint with the int grid."""
    man = json.load(open(os.path.join(ck, "manifest.json")))
    out = {}
    for e in man["completed_blocks"]:
        with h5py.File(os.path.join(ck, e["file"]), "r") as f:
            for name, g in f["layers/%d" % e["block"]].items():
                grid = g.attrs.get("grid", b"int")
                grid = grid.decode() if isinstance(grid, bytes) else str(grid)
                if grid != "int":
                    sys.exit("%s: layer %d %s: grid %s, only int is supported" % (ck, e["block"], name, grid))
                c = g["codes"][()].astype(np.float32)
                gi = g["g_idx"][()]
                s, z = g["scales"][()][:, gi], g["zeros"][()][:, gi]
                q = (s * (c - z)).astype(np.float32)
                if "outliers_idx" in g:
                    q.reshape(-1)[g["outliers_idx"][()]] += g["outliers_val"][()]
                out[(e["block"], name)] = q
    return out


class Model:
    def __init__(self, mdir):
        c = json.load(open(os.path.join(mdir, "config.json")))
        self.W = {}
        for f in sorted(os.listdir(mdir)):  # model.safetensors or shards
            if f.endswith(".safetensors"):
                self.W.update(read_st(os.path.join(mdir, f)))
        self.nq, self.nkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim", c["hidden_size"] // self.nq)
        self.eps, self.nl, self.theta = c["rms_norm_eps"], c["num_hidden_layers"], c["rope_theta"]

    def tables(self, L):
        inv = 1.0 / self.theta ** (np.arange(0, self.hd, 2) / self.hd)
        ang = np.arange(L)[:, None] * inv[None, :]
        mask = np.triu(np.full((L, L), -np.inf, np.float32), 1)
        return np.cos(ang).astype(np.float32)[:, None, :], np.sin(ang).astype(np.float32)[:, None, :], mask

    def logp(self, x):
        """Log-softmax of the logits from final hidden states x [L, H]."""
        emb = self.W["model.embed_tokens.weight"]
        head = self.W.get("lm_head.weight", emb)
        z = (rmsnorm(x, self.W["model.norm.weight"], self.eps) @ head.T).astype(np.float64)
        z -= z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    def block(self, l, x, lin, tabs):
        """Block l on one window; lin(l, name) the weight.  Returns the
        output and the 4 group inputs."""
        cos, sin, mask = tabs
        L, nq, nkv, hd = x.shape[0], self.nq, self.nkv, self.hd
        p = "model.layers.%d." % l
        xn = rmsnorm(x, self.W[p + "input_layernorm.weight"], self.eps)
        q = rope((xn @ lin(l, "self_attn.q_proj").T).reshape(L, nq, hd), cos[:L], sin[:L])
        k = rope((xn @ lin(l, "self_attn.k_proj").T).reshape(L, nkv, hd), cos[:L], sin[:L])
        v = (xn @ lin(l, "self_attn.v_proj").T).reshape(L, nkv, hd)
        k, v = np.repeat(k, nq // nkv, 1), np.repeat(v, nq // nkv, 1)
        sc = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / np.float32(np.sqrt(hd)) + mask
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc = (sc / sc.sum(-1, keepdims=True)).astype(np.float32)
        att = np.matmul(sc, v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(L, nq * hd)
        h1 = x + att @ lin(l, "self_attn.o_proj").T
        h1n = rmsnorm(h1, self.W[p + "post_attention_layernorm.weight"], self.eps)
        gt = h1n @ lin(l, "mlp.gate_proj").T
        a = ((gt / (1 + np.exp(-gt))) * (h1n @ lin(l, "mlp.up_proj").T)).astype(np.float32)
        return (h1 + a @ lin(l, "mlp.down_proj").T).astype(np.float32), [xn, att, h1n, a]


def study(M, Q, ids):
    """Per block: {linear: f(Q)} on these windows and the output MSE vs fp."""
    tabs = M.tables(ids.shape[1])
    fw = lambda l, n: M.W["model.layers.%d.%s.weight" % (l, n)]
    qw = lambda l, n: Q.get((l, n), fw(l, n))
    xf = M.W["model.embed_tokens.weight"][ids]
    xq = xf.copy()
    res, nw = [], ids.shape[0]
    for l in range(M.nl):
        obj = {n: 0.0 for g in LIN for n in g}
        dsum = [0.0] * len(LIN)
        mse = 0.0
        for w in range(ids.shape[0]):
            xq_out, ins = M.block(l, xq[w], qw, tabs)
            xf[w] = M.block(l, xf[w], fw, tabs)[0]
            xq[w] = xq_out
            for g, names in enumerate(LIN):
                X = ins[g].astype(np.float64)
                dsum[g] += float((X * X).sum())
                for n in names:
                    if (l, n) in Q:
                        E = (fw(l, n) - Q[(l, n)]).astype(np.float64)
                        obj[n] += float(((X @ E.T) ** 2).sum())
            mse += float(((xq[w].astype(np.float64) - xf[w]) ** 2).mean())
        # damped proxy loss as recorded by quantize: + 1/2 lambda ||E||^2,
        # lambda = percdamp * mean diag(H), H = 2/N X^T X (no dead columns)
        damped = {}
        for g, names in enumerate(LIN):
            for n in names:
                if (l, n) in Q:
                    E = (fw(l, n) - Q[(l, n)]).astype(np.float64)
                    lam = PERCDAMP * 2.0 * dsum[g] / nw / E.shape[1]
                    damped[n] = obj[n] / nw + 0.5 * lam * float((E * E).sum())
        res.append(({n: v / nw for n, v in obj.items()}, mse / nw, damped))
    # model level on these windows: mean KL(fp || quantized) of the next-token
    # distribution and the mean NLL difference (positions 2..L, as eval)
    kl = dnll = 0.0
    for w in range(nw):
        pf, pq = M.logp(xf[w]), M.logp(xq[w])
        kl += float((np.exp(pf) * (pf - pq)).sum(-1)[:-1].mean())
        t = ids[w, 1:]
        r_ = np.arange(len(t))
        dnll += float((pf[r_, t] - pq[r_, t]).mean())
    return res, kl / nw, dnll / nw


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    M = Model(sys.argv[1])
    sets = [(os.path.basename(s), windows(s)) for s in sys.argv[2:4]]
    for ck in sys.argv[4:]:
        Q = dequant(ck)
        tot = []
        for sname, ids in sets:
            r, kl, dnll = study(M, Q, ids)
            print("MODEL\t%s\t%s\tKL(fp||q) %.6g\tNLL(q) - NLL(fp) %.6g" % (
                os.path.basename(ck), sname, kl, dnll))
            for l, (obj, mse, _) in enumerate(r):
                print("%s\t%s\tblock %d\tobjective %.6g\tout_mse %.6g\t%s" % (
                    os.path.basename(ck), sname, l, sum(obj.values()), mse,
                    " ".join("%s=%.5g" % (n.split(".")[1], v) for n, v in obj.items())))
            tot.append((sum(sum(o[0].values()) for o in r), r[-1][1]))
            if len(tot) == 1:  # calibration file: the recorded losses
                rec = {e["block"]: e["stats"] for e in json.load(
                    open(os.path.join(ck, "manifest.json")))["completed_blocks"]}
                rel = max(abs(d[n] / rec[l][n]["loss"] - 1) for l, (_, _, d) in enumerate(r)
                          for n in d)
                print("RECORDED\t%s\t%s\tmax relative difference of the damped objective "
                      "vs the checkpoint's loss %.2e" % (os.path.basename(ck), sname, rel))
        print("SUMMARY\t%s\tobjective A %.6g B %.6g (B/A %.4f)\tfinal out_mse A %.6g B %.6g" % (
            os.path.basename(ck), tot[0][0], tot[1][0], tot[1][0] / tot[0][0], tot[0][1], tot[1][1]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()

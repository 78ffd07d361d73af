#!/usr/bin/python3
"""Independent reference for `mpiquant quantize --method fp8` checkpoints.

Written from the definitions (OCP 8-bit floating point v1.0 for E4M3; the
compressed-tensors / llm-compressor scale rule; vLLM's activation kernels as
docs/methods.md describes them), not from the C code:

  E4M3 code: sign bit, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0
  is subnormal (m/8 * 2^-6); S.1111.111 is NaN, so the largest value is 448.
  Encoding: nearest value, ties to the even mantissa, saturating at +-448.
  Weight scale s = max(absmax / 448, FLT_EPSILON) (f32) per output channel,
  or per B x B block (--weight-block B; edge blocks partial); code =
  e4m3(w / s); the checkpoint's dequantized weight is s * value(code).
  Activations (f32): dynamic per token s = max(absmax / 448, 1/(448*512)),
  x' = e4m3(x / s) * s; dynamic with blocks: per token and group of B,
  s = max(absmax, 1e-10) / 448; static: s = max(max|x| over the calibration
  tokens, FLT_EPSILON) / 448 per block and input group (q/k/v, o, gate/up,
  down), observed in the forward of the weight-quantized model with
  unquantized activations, x' = e4m3(x * (1/s)) * s; none: x' = x.

Checks: every linear's codes and scales equal the reference exactly (zeros
0, grid attribute fp8_e4m3); static scales within CALIB_SCALE_RTOL of the
reference's (BLAS vs numpy forward rounding); then prints the perplexity of
a numpy fake-quant forward over the first NWIN eval windows:
    ref_ppl <value>
for the caller to compare with `mpiquant eval --ckpt`.

usage: fp8_ref.py MODEL_DIR CKPT_DIR EVAL_IDS_TXT NWIN [CALIB_IDS_TXT]
       fp8_ref.py --act-bin FP8_ACT_BIN   (tests/unit/test_fp8_act.c's dump:
       the C activation quantizers bit for bit against act_quant below)
(CALIB_IDS_TXT: the calibration windows, one per line, for --act static;
HDF5_PLUGIN_PATH must name the zstd filter plugin)
"""
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sq_check import read_st, rmsnorm, rope  # noqa: E402  (plain numpy helpers)

# measured: numpy vs the BLAS forward changes max|x| by <= 2e-7 relative
CALIB_SCALE_RTOL = 1e-5
EPS32 = np.float32(np.finfo(np.float32).eps)
FP8_MAX = np.float32(448.0)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
GROUP = {"self_attn.q_proj": 0, "self_attn.k_proj": 0, "self_attn.v_proj": 0,
         "self_attn.o_proj": 1, "mlp.gate_proj": 2, "mlp.up_proj": 2, "mlp.down_proj": 3}


def e4m3_table():
    """value of each of the 256 codes, from the bit fields"""
    t = np.zeros(256)
    for c in range(256):
        s, e, m = c >> 7, (c >> 3) & 15, c & 7
        if e == 15 and m == 7:
            v = np.nan
        elif e == 0:
            v = m / 8.0 * 2.0 ** -6
        else:
            v = (1 + m / 8.0) * 2.0 ** (e - 7)
        t[c] = -v if s else v
    return t


TABLE = e4m3_table()
POS = TABLE[:127]  # codes 0..126: the finite non-negative values, ascending


def e4m3_encode(x):
    """codes of f32 array x: nearest, ties to even mantissa, saturating"""
    x = np.asarray(x, np.float32)
    a = np.abs(x).astype(np.float64)
    i = np.clip(np.searchsorted(POS, a, side="right") - 1, 0, 125)
    lo, hi = POS[i], POS[i + 1]
    pick_hi = (a - lo > hi - a) | ((a - lo == hi - a) & (i % 2 == 1))
    code = np.where(pick_hi, i + 1, i)
    code = np.where(a >= 448.0, 126, code)
    code = np.where(np.isnan(x), 127, code)
    return (code | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


def e4m3_value(code):
    return TABLE[code].astype(np.float32)


def weight_ref(w, block):
    """(codes, scales [out, ngroups] replicated per row, dequantized)"""
    out, n = w.shape
    if block <= 0:
        s = np.maximum(np.abs(w).max(1) / FP8_MAX, EPS32).astype(np.float32)[:, None]
        sc = s
        full = np.repeat(s, n, 1)
    else:
        nbr, nbc = -(-out // block), -(-n // block)
        bm = np.zeros((nbr, nbc), np.float32)
        for i in range(nbr):
            for j in range(nbc):
                bm[i, j] = np.abs(w[i * block:(i + 1) * block, j * block:(j + 1) * block]).max()
        sb = np.maximum(bm / FP8_MAX, EPS32).astype(np.float32)
        sc = sb[np.arange(out) // block]  # [out, nbc]
        full = sc[:, np.arange(n) // block]
    codes = e4m3_encode(w / full)
    return codes, sc, (e4m3_value(codes) * full).astype(np.float32)


def mm(x, w):
    """x @ w.T in f32; FP8_REF_MATMUL64=1 sums in f64 and rounds once (an
    equally valid f32 result: how the tolerance of the caller was measured)"""
    if os.environ.get("FP8_REF_MATMUL64") == "1":
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)
    return x @ w.T


def act_quant(x, scheme, block, s_static):
    x = np.asarray(x, np.float32)
    if scheme == "none":
        return x
    if scheme == "static":
        s = np.float32(s_static)
        return (e4m3_value(e4m3_encode(x * (np.float32(1) / s))) * s).astype(np.float32)
    if block > 0:
        n = x.shape[-1]
        y = np.empty_like(x)
        for c0 in range(0, n, block):
            xs = x[..., c0:c0 + block]
            s = (np.maximum(np.abs(xs).max(-1, keepdims=True), np.float32(1e-10)) / FP8_MAX).astype(np.float32)
            y[..., c0:c0 + block] = e4m3_value(e4m3_encode(xs / s)) * s
        return y
    s = (np.abs(x).max(-1, keepdims=True) / FP8_MAX).astype(np.float32)
    s = np.maximum(s, np.float32(1.0) / np.float32(448.0 * 512.0))
    return (e4m3_value(e4m3_encode(x / s)) * s).astype(np.float32)


class Model:
    def __init__(self, mdir):
        self.cfg = json.load(open(os.path.join(mdir, "config.json")))
        self.W = read_st(os.path.join(mdir, "model.safetensors"))
        c = self.cfg
        self.H, self.nq, self.nkv, self.hd = c["hidden_size"], c["num_attention_heads"], \
            c["num_key_value_heads"], c["head_dim"]
        self.eps, self.nl = c["rms_norm_eps"], c["num_hidden_layers"]

    def block(self, l, x, lin, aq):
        """x [nw, L, H]; lin: name -> weight; aq(group, x) the input quantizer;
        returns out and the max |x| at each of the 4 group inputs"""
        p = "model.layers.%d." % l
        g = lambda n: self.W[p + n]
        nw, L, H = x.shape
        nq, nkv, hd = self.nq, self.nkv, self.hd
        inv = 1.0 / self.cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
        ang = np.arange(L)[:, None] * inv[None, :]
        cos = np.cos(ang).astype(np.float32)[:, None, :]
        sin = np.sin(ang).astype(np.float32)[:, None, :]
        mask = np.triu(np.full((L, L), -np.inf, np.float32), 1)
        amax = np.zeros(4, np.float32)
        out = np.empty_like(x)
        for w in range(nw):
            xw = x[w]
            xn = rmsnorm(xw, g("input_layernorm.weight"), self.eps)
            amax[0] = max(amax[0], np.abs(xn).max())
            xq = aq(0, xn)
            q = rope((mm(xq, lin["self_attn.q_proj"])).reshape(L, nq, hd), cos, sin)
            k = rope((mm(xq, lin["self_attn.k_proj"])).reshape(L, nkv, hd), cos, sin)
            v = (mm(xq, lin["self_attn.v_proj"])).reshape(L, nkv, hd)
            rep = nq // nkv
            k = np.repeat(k, rep, 1)
            v = np.repeat(v, rep, 1)
            sc = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / np.float32(np.sqrt(hd)) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc = (sc / sc.sum(-1, keepdims=True)).astype(np.float32)
            att = np.matmul(sc, v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(L, nq * hd)
            amax[1] = max(amax[1], np.abs(att).max())
            h1 = xw + mm(aq(1, att), lin["self_attn.o_proj"])
            h1n = rmsnorm(h1, g("post_attention_layernorm.weight"), self.eps)
            amax[2] = max(amax[2], np.abs(h1n).max())
            hq = aq(2, h1n)
            gt = mm(hq, lin["mlp.gate_proj"])
            act = ((gt / (1 + np.exp(-gt))) * (mm(hq, lin["mlp.up_proj"]))).astype(np.float32)
            amax[3] = max(amax[3], np.abs(act).max())
            out[w] = h1 + mm(aq(3, act), lin["mlp.down_proj"])
        return out, amax

    def embed(self, ids):
        return self.W["model.embed_tokens.weight"][ids]

    def nll(self, x, ids):
        """x [L, H] the last block's output of one window, ids [L]"""
        h = rmsnorm(x, self.W["model.norm.weight"], self.eps)
        head = self.W.get("lm_head.weight", self.W["model.embed_tokens.weight"])
        lg = (h @ head.T).astype(np.float64)
        lg -= lg.max(-1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        tgt = ids[1:]
        return -lp[np.arange(len(tgt)), tgt].sum(), tgt.size


def read_ids(path, n, L=None):
    ids = np.array([[int(t) for t in ln.split()] for ln in open(path) if ln.strip()][:n])
    return ids[:, :L] if L else ids


def check_act_bin(path):
    """the C quantizers' dump (tests/unit/test_fp8_act.c) against act_quant"""
    raw = open(path, "rb").read()
    nrows, n, group = np.frombuffer(raw, "<u4", 3)
    s_static = np.frombuffer(raw, "<f4", 1, 12)[0]
    cnt = int(nrows) * int(n)
    arr = [np.frombuffer(raw, "<f4", cnt, 16 + 4 * cnt * k).reshape(nrows, n) for k in range(4)]
    x = arr[0]
    fails = 0
    for name, y, ref in (("dynamic per token", arr[1], act_quant(x, "dynamic", 0, 0)),
                         ("dynamic per token-group %d" % group, arr[2],
                          act_quant(x, "dynamic", int(group), 0)),
                         ("static s=%g" % s_static, arr[3], act_quant(x, "static", 0, s_static))):
        bad = np.flatnonzero(y.view(np.uint32) != ref.view(np.uint32))
        print("%s: %d of %d values bit-identical" % (name, cnt - len(bad), cnt))
        for i in bad[:5]:
            print("  x = %r: C %r, reference %r" % (x.flat[i], y.flat[i], ref.flat[i]))
        fails += len(bad) > 0
    print("fp8_ref act: %s" % ("all ok" if not fails else "%d FAILED" % fails))
    return 1 if fails else 0


def main():
    if sys.argv[1] == "--act-bin":
        return check_act_bin(sys.argv[2])
    mdir, ck, evf, nwin = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    calf = sys.argv[5] if len(sys.argv) > 5 else None
    m = Model(mdir)
    man = json.load(open(os.path.join(ck, "manifest.json")))
    opt = man["options"]
    scheme, block = opt["fp8_act"], int(opt.get("weight_block", 0))
    assert opt["method"] == "fp8", opt["method"]
    files = {e["block"]: e["file"] for e in man["completed_blocks"]}
    fails = 0
    lins, s_ck = [], []
    for l in range(m.nl):
        f = h5py.File(os.path.join(ck, files[l]), "r")
        lin = {}
        for n in LINEARS:
            w = m.W["model.layers.%d.%s.weight" % (l, n)]
            codes, sc, q = weight_ref(w, block)
            d = f["/layers/%d/%s" % (l, n)]
            c_ck, s_ck_l, z_ck = d["codes"][...], d["scales"][...], d["zeros"][...]
            ok = (d.attrs["grid"] in (b"fp8_e4m3", "fp8_e4m3") and c_ck.shape == codes.shape and
                  np.array_equal(c_ck, codes) and np.array_equal(s_ck_l, sc) and not z_ck.any())
            if not ok:
                bad = np.flatnonzero(c_ck != codes) if c_ck.shape == codes.shape else []
                print("block %d %-17s FAIL: codes differ at %d of %d, scales max |diff| %s"
                      % (l, n, len(bad), codes.size,
                         np.abs(s_ck_l - sc).max() if s_ck_l.shape == sc.shape else "shape"))
            fails += not ok
            lin[n] = q
        lins.append(lin)
        if scheme == "static":
            s_ck.append(f["/aux/%d/fp8.input_scale" % l][...].reshape(4))
        f.close()
    print("weights: %d blocks x 7 linears, codes and scales %s" %
          (m.nl, "identical to the reference" if not fails else "DIFFER"))
    if scheme == "static":
        x = m.embed(read_ids(calf, opt["nsamples"], opt["seqlen"]))
        for l in range(m.nl):
            x, amax = m.block(l, x, lins[l], lambda g, v: v)
            ref = np.maximum(amax / FP8_MAX, EPS32).astype(np.float32)
            rel = np.abs(s_ck[l] - ref) / ref
            ok = rel.max() <= CALIB_SCALE_RTOL
            print("block %d static input scales %s (ckpt %s), max rel diff %.2e %s"
                  % (l, np.array2string(ref, precision=5), np.array2string(s_ck[l], precision=5),
                     rel.max(), "ok" if ok else "FAIL"))
            fails += not ok
    ids = read_ids(evf, nwin)
    x = m.embed(ids)
    for l in range(m.nl):
        aq = lambda g, v, l=l: act_quant(v, scheme, block, s_ck[l][g] if scheme == "static" else 0)
        x, _ = m.block(l, x, lins[l], aq)
    tot, cnt = 0.0, 0
    for w in range(len(ids)):
        a, b = m.nll(x[w], ids[w])
        tot, cnt = tot + a, cnt + b
    print("ref_ppl %.6f" % np.exp(tot / cnt))
    print("fp8_ref: %s" % ("all ok" if not fails else "%d FAILED" % fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Independent checks of --grid nf4|fp4, --double-quant and --keep-columns.

Written from the definitions, not from the C code:
  NF4 (QLoRA, Dettmers et al. 2023): the 16 published NF4 values; FP4 E2M1:
    {0, .5, 1, 1.5, 2, 3, 4, 6} and negatives, divided by 6. Blockwise absmax:
    a = max |x| over the block, code = nearest value to x / a (f32 division;
    an exact midpoint goes to the lower value, bitsandbytes' '>' compare),
    Q = a * value[code]; an all-zero block has a = 0 and the code of 0.
  Double quantization (QLoRA, with symmetric int8 at the second level): m =
    mean of all block absmax values of the layer, per 256 consecutive values
    (row-major [out, ngroups]) a2 = max |s - m|, c = rint((s - m) / a2 * 127),
    s' = c * (a2 / 127) + m.
  GPTQ with a codebook: the reference column loop (golden README rules 2-10:
    damping 0.01 * mean diag, upper Cholesky factor of H^-1, lazy blocks of
    128, dynamic group parameters from the outer W at each group start) with
    the quantizer above instead of the uniform one.
  OWQ (Lee et al. 2024): the K columns with the largest diag(H)_j *
    ||W[:, j]||^2 stay in fp16; they are processed last (after all other
    columns, so every quantization error can be compensated in them) and not
    quantized; groups run over the other columns in processing order.

Subcommands:
  layer OUTDIR GOLDEN_DIR   check the `mpiquant layer` outputs of grids_layer.sh
  model MODEL_DIR CKPT IDS_TXT NWIN PPL
                            numpy NF4 RTN (g64) of every linear of the fp model,
                            a numpy forward on the first NWIN windows, vs PPL
                            (mpiquant eval --ckpt of CKPT) and the checkpoint's
                            own dequantized weights
Named tolerances below; exit status 1 on any failure.
"""
import json, os, struct, sys

import numpy as np

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
FP4 = (np.array([-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float64) / 6
       ).astype(np.float32)
BOOKS = {"nf4": NF4, "fp4": FP4}

# Tolerances (names used in the messages)
DQ_SCALE_REL = 2e-6     # double-quantized scales: the mean summed in another order
                        # moves s' by a few ulp (f32 eps 1.2e-7), never a whole int8 step
GPTQ_CODES = 0.99       # golden README GPTQ criterion (fp32 vs fp64 reruns: >= 99.36 %)
GPTQ_LOSS_REL = 1e-3    # golden README: proxy loss within 0.1 %
KEPT_REL = 1e-3         # kept fp16 columns (after error feedback) vs numpy, relative to max |W|
MODEL_PPL_REL = 1e-4    # numpy vs mpiquant fp32 forward: ~1e-7 measured on the fp model (sq/export checks)
MODEL_W_REL = 1e-6      # checkpoint weights vs numpy NF4 RTN, relative to each row's absmax

FAILED = []


def check(ok, msg):
    print(("ok   " if ok else "FAIL ") + msg)
    if not ok:
        FAILED.append(msg)


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {}) or {}
    dt = {"F32": np.float32, "U8": np.uint8, "I32": np.int32, "I64": np.int64, "F16": np.float16,
          "BF16": np.uint16}
    out = {}
    for k, v in h.items():
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], np.dtype(dt[v["dtype"]]).newbyteorder("<")
                               ).reshape(v["shape"]).copy()
    return out, meta


def nearest(book, y):
    mids = ((book[:-1] + book[1:]) * np.float32(0.5)).astype(np.float32)
    return np.searchsorted(mids, y, side="left").astype(np.uint8)  # count of mids < y


def block_quant(book, x):
    """x [rows, n] one block per row -> absmax [rows], codes, q"""
    a = np.abs(x).max(1).astype(np.float32)
    safe = np.where(a > 0, a, np.float32(1))
    codes = nearest(book, (x / safe[:, None]).astype(np.float32))
    codes[a == 0] = nearest(book, np.zeros(1, np.float32))[0]
    q = (a[:, None] * book[codes]).astype(np.float32)
    return a, codes, q


def rtn_grid(book, W, g):
    out, n = W.shape
    g = n if g <= 0 else g
    ng = (n + g - 1) // g
    S = np.zeros((out, ng), np.float32)
    C = np.zeros(W.shape, np.uint8)
    Q = np.zeros(W.shape, np.float32)
    for k in range(ng):
        c0, c1 = k * g, min(n, (k + 1) * g)
        S[:, k], C[:, c0:c1], Q[:, c0:c1] = block_quant(book, W[:, c0:c1])
    return S, C, Q


def double_quant(S):
    m = np.float32(S.astype(np.float64).mean())
    flat = S.ravel().astype(np.float32)
    out = np.empty_like(flat)
    for b0 in range(0, flat.size, 256):
        s = flat[b0:b0 + 256]
        d = (s - m).astype(np.float32)
        a2 = np.float32(np.abs(d).max())
        if a2 > 0:
            c = np.clip(np.rint((d / a2 * np.float32(127)).astype(np.float32)), -127, 127)
        else:
            c = np.zeros_like(d)
        out[b0:b0 + 256] = (c.astype(np.float32) * (a2 / np.float32(127)) + m).astype(np.float32)
    return out.reshape(S.shape)


def uniform_params(x, bits):  # golden rule 11, asymmetric, rows of x
    maxq = np.float32(2 ** bits - 1)
    mn = np.minimum(x.min(1), 0).astype(np.float32)
    mx = np.maximum(x.max(1), 0).astype(np.float32)
    z0 = (mn == 0) & (mx == 0)
    mn[z0], mx[z0] = -1, 1
    s = ((mx - mn) / maxq).astype(np.float32)
    return s, np.rint((-mn / s).astype(np.float32)).astype(np.float32)


def owq_columns(W, H, K):
    score = np.diag(H).astype(np.float64) * (W.astype(np.float64) ** 2).sum(0)
    order = sorted(range(W.shape[1]), key=lambda j: (-score[j], j))
    return np.array(sorted(order[:K]), np.int64)


def gptq(W, H, g, book=None, bits=4, keep=(), B=128, damp=0.01):
    """Reference GPTQ loop (rules 2-10) with a codebook (book) or the uniform
    asymmetric grid (bits); columns `keep` processed last and kept in fp16.
    Returns Q [out, n] (original order, kept columns = their fp16 values)."""
    W = W.astype(np.float32).copy()
    H = H.astype(np.float64).copy()
    out, n = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    keep = list(keep)
    perm = [j for j in range(n) if j not in set(keep)] + keep
    nq = n - len(keep)
    H = H[np.ix_(perm, perm)]
    W = W[:, perm]
    H += damp * np.mean(np.diag(H)) * np.eye(n)
    U = np.linalg.cholesky(np.linalg.inv(H)).T.astype(np.float32)
    Q = np.zeros_like(W)
    sc = zr = None
    for i1 in range(0, n, B):
        i2 = min(n, i1 + B)
        W1 = W[:, i1:i2].copy()
        E = np.zeros_like(W1)
        for i in range(i2 - i1):
            c = i1 + i
            if c % g == 0 and c < nq:
                blk = W[:, c:min(c + g, nq)]
                if book is not None:
                    sc, zr = np.abs(blk).max(1).astype(np.float32), None
                else:
                    sc, zr = uniform_params(blk, bits)
            w = W1[:, i]
            if c >= nq:
                q = w.astype(np.float16).astype(np.float32)
            elif book is not None:
                safe = np.where(sc > 0, sc, np.float32(1))
                cd = nearest(book, (w / safe).astype(np.float32))
                cd[sc == 0] = nearest(book, np.zeros(1, np.float32))[0]
                q = (sc * book[cd]).astype(np.float32)
            else:
                cd = np.clip(np.rint((w / sc).astype(np.float32)) + zr, 0, 2 ** bits - 1)
                q = (sc * (cd - zr)).astype(np.float32)
            Q[:, c] = q
            e = ((w - q) / U[c, c]).astype(np.float32)
            W1[:, i:] -= (e[:, None] * U[c, c:i2][None, :]).astype(np.float32)
            E[:, i] = e
        W[:, i2:] -= E @ U[i1:i2, i2:]
    out_q = np.zeros_like(Q)
    out_q[:, perm] = Q
    return out_q


def proxy_loss(W, H, Q):
    H = H.astype(np.float64).copy()
    d = np.diag(H) == 0
    H[d, d] = 1
    H += 0.01 * np.mean(np.diag(H)) * np.eye(H.shape[0])
    Wp = W.astype(np.float64).copy()
    Wp[:, d] = 0
    D = Wp - Q.astype(np.float64)
    return 0.5 * float(np.einsum("ri,ij,rj->", D, H, D))


def selfcons(r, book, label):
    """Q == scale[:, g_idx] * value[codes] (+ the sparse part), exactly"""
    ng = r["scale"].shape[1]
    gi = r["g_idx"].astype(np.int64)
    Q = (r["scale"][:, gi] * book[r["codes"]]).astype(np.float32)
    if "outliers_idx" in r:
        Q.ravel()[r["outliers_idx"]] += r["outliers_val"]
    check(np.array_equal(Q, r["Q"]) and ng == r["scale"].shape[1] and not r["zero"].any(),
          "%s: Q = scale * value[code] (+ outliers) exactly, zeros 0" % label)


def layer(outdir, gold):
    Wr, _ = read_st(os.path.join(gold, "rtn_w4_g128_asym.safetensors"))
    Wr = Wr["W"]
    for grid, g in (("nf4", 64), ("fp4", 64), ("nf4", -1)):
        r, _ = read_st(os.path.join(outdir, "rtn_%s_g%d.st" % (grid, g)))
        S, C, Q = rtn_grid(BOOKS[grid], Wr, g)
        lab = "RTN %s g%d (rtn_w4_g128_asym W %s)" % (grid, g, "x".join(map(str, Wr.shape)))
        check(np.array_equal(r["codes"], C), "%s: codes identical (%d differ)" %
              (lab, int((r["codes"] != C).sum())))
        check(np.array_equal(r["scale"], S), "%s: scales (block absmax) identical" % lab)
        check(np.array_equal(r["Q"], Q), "%s: Q identical" % lab)
        selfcons(r, BOOKS[grid], lab)
    # double quantization on top of the nf4 g64 absmax values
    r, _ = read_st(os.path.join(outdir, "rtn_nf4_g64_dq.st"))
    S, C, _ = rtn_grid(NF4, Wr, 64)
    S2 = double_quant(S)
    rel = float(np.abs(r["scale"] - S2).max() / np.abs(S2).max())
    check(np.array_equal(r["codes"], C), "RTN nf4 g64 --double-quant: codes of the fp32 absmax")
    check(rel <= DQ_SCALE_REL, "RTN nf4 g64 --double-quant: scales vs numpy max rel %.2e <= "
          "DQ_SCALE_REL %.0e" % (rel, DQ_SCALE_REL))
    step = float(np.abs(S - S2).max())
    check(step > 0, "RTN nf4 g64 --double-quant: the scales changed (max |s - s'| %.3g)" % step)
    selfcons(r, NF4, "RTN nf4 g64 --double-quant")

    cases = [("gptq_a_w4_g128_asym", "gptq_nf4_g64.st", "nf4", 0),
             ("gptq_i_w4_g64_asym_odd", "gptq_i_fp4_g64.st", "fp4", 0),
             ("gptq_a_w4_g128_asym", "gptq_owq_k8_g64.st", None, 8),
             ("gptq_g_w4_g128_asym_dead", "gptq_g_owq_nf4_k6_g64.st", "nf4", 6)]
    for case, fn, grid, K in cases:
        gc, _ = read_st(os.path.join(gold, case + ".safetensors"))
        W, H = gc["W"], gc["H"]
        r, _ = read_st(os.path.join(outdir, fn))
        lab = "GPTQ %s g64%s (%s)" % (grid or "int4 asym", " keep %d" % K if K else "", case)
        keep = owq_columns(W, H, K) if K else np.zeros(0, np.int64)
        if K:
            got = np.array(sorted(r["perm"][-K:]), np.int64)
            cols = np.unique(r["outliers_idx"] % W.shape[1])
            check(np.array_equal(got, keep) and np.array_equal(cols, keep),
                  "%s: kept columns %s equal numpy's %s" % (lab, got.tolist(), keep.tolist()))
            check(r["outliers_idx"].size == K * W.shape[0], "%s: %d x %d kept entries" %
                  (lab, W.shape[0], K))
        Qn = gptq(W, H, 64, BOOKS.get(grid), keep=keep)
        qcols = np.setdiff1d(np.arange(W.shape[1]), keep)
        if grid:
            # codes of numpy's result: its block absmax per (row, group) is not
            # stored, so compare the grid points Q (same code <=> same Q here)
            same = float((r["Q"][:, qcols] == Qn[:, qcols]).mean())
        else:
            same = float((np.abs(r["Q"][:, qcols] - Qn[:, qcols]) <=
                          1e-6 * np.abs(Qn).max()).mean())
        check(same >= GPTQ_CODES, "%s: %.4f%% of quantized weights on numpy's grid point "
              "(>= GPTQ_CODES %.0f%%)" % (lab, 100 * same, 100 * GPTQ_CODES))
        lc, ln = proxy_loss(W, H, r["Q"]), proxy_loss(W, H, Qn)
        check(abs(lc - ln) <= GPTQ_LOSS_REL * ln, "%s: proxy loss %.6g vs numpy %.6g (rel %.1e <= "
              "GPTQ_LOSS_REL %.0e)" % (lab, lc, ln, abs(lc - ln) / ln, GPTQ_LOSS_REL))
        if K:
            d = float(np.abs(r["Q"][:, keep] - Qn[:, keep]).max() / np.abs(W).max())
            check(d <= KEPT_REL, "%s: kept fp16 columns vs numpy max diff %.2e of max|W| <= "
                  "KEPT_REL %.0e" % (lab, d, KEPT_REL))
            check(np.array_equal(r["Q"][:, keep], r["Q"][:, keep].astype(np.float16).astype(np.float32)),
                  "%s: kept values are fp16 numbers" % lab)
            plain = gptq(W, H, 64, BOOKS.get(grid))
            lp = proxy_loss(W, H, plain)
            check(lc < lp, "%s: loss %.6g below the same GPTQ without kept columns %.6g" %
                  (lab, lc, lp))
        if grid:
            gi = r["g_idx"].astype(np.int64)
            Qd = (r["scale"][:, gi] * BOOKS[grid][r["codes"]]).astype(np.float32)
            if K:
                Qd.ravel()[r["outliers_idx"]] += r["outliers_val"]
            check(np.array_equal(Qd, r["Q"]), "%s: Q = scale * value[code] (+ kept) exactly" % lab)
        if grid == "nf4" and not K:  # NF4 vs int4 on the same case
            lint = proxy_loss(W, H, gptq(W, H, 64, None))
            print("info %s: proxy loss nf4 %.6g, uniform int4 asym %.6g" % (lab, lc, lint))


def model(mdir, ckpt, ids_txt, nwin, ppl_c):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_ct_check import ppl, read_st_dir, LINEARS
    import h5py
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    W, _ = read_st_dir(mdir)
    W = {k: v.astype(np.float32) for k, v in W.items()}
    worst = 0.0
    for l in range(cfg["num_hidden_layers"]):
        for lin in LINEARS:
            k = "model.layers.%d.%s.weight" % (l, lin)
            _, _, Q = rtn_grid(NF4, W[k], 64)
            W[k] = Q
    # the checkpoint's own dequantized weights equal numpy's
    import glob
    for f in sorted(glob.glob(os.path.join(ckpt, "blocks-*.h5"))):
        with h5py.File(f, "r") as h:
            for l in h["layers"]:
                for lin in LINEARS:
                    gp = h["layers/%s/%s" % (l, lin)]
                    gi = gp["g_idx"][()].astype(np.int64)
                    Qc = (gp["scales"][()][:, gi] * NF4[gp["codes"][()]]).astype(np.float32)
                    Qn = W["model.layers.%s.%s.weight" % (l, lin)]
                    den = np.maximum(np.abs(Qn).max(1, keepdims=True), 1e-30)
                    worst = max(worst, float((np.abs(Qc - Qn) / den).max()))
    check(worst <= MODEL_W_REL, "model: checkpoint weights vs numpy NF4 RTN g64: max rel %.2e <= "
          "MODEL_W_REL %.0e" % (worst, MODEL_W_REL))
    ids = np.array([[int(t) for t in line.split()] for line in open(ids_txt) if line.strip()])
    ids = ids[:int(nwin)]
    pn = ppl(cfg, W, ids, False)
    pf = ppl(cfg, {k: v for k, v in read_st_dir(mdir)[0].items()}, ids, False)
    rel = abs(pn - float(ppl_c)) / pn
    check(rel <= MODEL_PPL_REL, "model: NF4 RTN g64 ppl numpy %.6f vs mpiquant %.6f (rel %.1e <= "
          "MODEL_PPL_REL %.0e); fp32 %.6f" % (pn, float(ppl_c), rel, MODEL_PPL_REL, pf))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "layer":
        layer(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 7 and sys.argv[1] == "model":
        model(*sys.argv[2:7])
    else:
        print(__doc__)
        sys.exit(2)
    if FAILED:
        print("%d check(s) failed" % len(FAILED))
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Independent check of `mpiquant layer --method spqr` on a golden layer case
(W, H of ../shared/golden/gptq), numpy written from the SpQR paper
(Dettmers et al. 2023, Alg. 1) and its reference implementation's semantics
(leave-one-out outlier rule, act-order), with the definitions of
docs/methods.md ("SpQR"), not from the C code:

  Hessian as GPTQ (golden README rules 4-6, 17): dead columns (H_jj == 0)
  get H_jj = 1 and W[:, j] = 0; with act-order the columns are permuted by
  descending diag(H) (stable); H += 0.01 mean(diag H) I; U = upper Cholesky
  factor of H^-1 (float64, used in float32); d_j = U_jj.
  loo rule: T = tau * mean_j (var over rows of W[:, j], ddof 1) / d_j^2,
  from W after the dead fix (and permutation).
  Columns in processing order, blocks of 128 (in-block updates per column,
  the rest after each block), float32 like the reference GPTQ:
    group start (every g columns), per row, x = the row's current group:
      q0 = min/max quantizer with 0 in the range (s = (max - min) / maxq,
      real-valued zero -min / s) fitted on x;
      loo: base = sum_j ((x_j - q0(x_j)) / d_j)^2; for each j refit the
        quantizer on x without x_j, loo_j = the same sum over the others;
        flagged: base - loo_j > T;
      obs: e_j = (x_j - q0(x_j))^2 / d_j^2, m = mean e_j; flagged: e_j > tau m;
      s, z = the quantizer of the unflagged x_j (loo, none left: of zeros,
      [-1, 1]; obs: of all x); then the scales (and the zeros) of every 16
      consecutive rows quantized to 3 bits over their min/max:
      lo + rint((v - lo) / step) step.
    column j: q = s (clamp(rint(w / s + z), 0, 2^b - 1) - z); an outlier when
    (w - q)^2 / d_j^2 > T (loo) or > tau m with m > 0 (obs): q = fp16(w);
    e = (w - q) / d_j;  W[:, j+1:] -= e U[j, j+1:].
  Results are mapped back to the original columns (codes, outliers); the
  statistics stay in processing-order groups, g_idx[perm[i]] = i // g.

Criteria (named tolerances; an order-of-summation difference in the
trailing update can flip a rounding, which then feeds forward in that row):
  CODE_MATCH  codes identical on >= 99 % of the weights
  OUT_MATCH   outlier sets: |A xor B| <= 2 % of |A u B|
  STAT_REL    scales within 1e-4 relative and zeros within 1e-3 absolute
              on >= 99 % of the (row, group)s
  LOSS_REL    total loss (sum over rows of the GPTQ per-row loss) within
              1e-3 relative
  and the candidate self-consistent: Q == scale[g_idx] (codes - zero[g_idx])
  + sparse; perm and g_idx equal to numpy's.

usage: spqr_ref.py CASE.safetensors RESULT.safetensors BITS GROUP TAU [loo|obs] [act]
"""
import os, sys

import numpy as np

CODE_MATCH, OUT_MATCH, STAT_REL, ZERO_ABS, STAT_MATCH, LOSS_REL = 0.99, 0.02, 1e-4, 1e-3, 0.99, 1e-3
SG, SBITS, B = 16, 3, 128

f32 = np.float32


def read(path):
    import json, struct
    nd = {"F32": np.float32, "U8": np.uint8, "I32": np.int32, "I64": np.int64}
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             nd[v["dtype"]]).reshape(v["shape"]) for k, v in h.items()}


def minmax(x, keep, maxq):
    """Per row of x [r, c] over the kept entries and 0 ([-1, 1] when all
    are 0): scale, real-valued zero."""
    mn = np.minimum(np.where(keep, x, f32(0)).min(1), f32(0))
    mx = np.maximum(np.where(keep, x, f32(0)).max(1), f32(0))
    both = (mn == 0) & (mx == 0)
    mn, mx = np.where(both, f32(-1), mn), np.where(both, f32(1), mx)
    s = ((mx - mn) / f32(maxq)).astype(f32)
    return s, (-mn / s).astype(f32)


def quant(w, s, z, maxq):
    c = np.clip(np.rint((w / s + z).astype(f32)), 0, maxq).astype(f32)
    return c, (s * (c - z)).astype(f32)


def bilevel(v):
    out = v.copy()
    for t in range(0, len(v), SG):
        c = v[t:t + SG]
        lo, hi = c.min(), c.max()
        step = f32((hi - lo) / f32(2 ** SBITS - 1))
        out[t:t + SG] = lo + np.rint((c - lo) / step).astype(f32) * step if step > 0 else lo
    return out.astype(f32)


def werr(x, keep, d, maxq):
    """Per row: sum over the kept x_j of ((x_j - q(x_j)) / d_j)^2, q fitted on
    the kept values."""
    s, z = minmax(x, keep, maxq)
    _, q = quant(x, s[:, None], z[:, None], maxq)
    e = ((x - q) / d).astype(f32)
    return np.where(keep, e * e, 0).astype(np.float64).sum(1)


def likely(x, d, maxq, tau, rule, T):
    """Flags of the group x [m, c] before its fit; the obs rule's mean error."""
    m, c = x.shape
    if rule == "loo":
        if tau <= 0:
            return np.zeros_like(x, bool), np.zeros(m, f32)
        base = werr(x, np.ones_like(x, bool), d, maxq)
        red = np.stack([base - werr(x, np.arange(c) != j, d, maxq) for j in range(c)], 1)
        return red > T, np.zeros(m, f32)
    s0, z0 = minmax(x, np.ones_like(x, bool), maxq)
    _, q0 = quant(x, s0[:, None], z0[:, None], maxq)
    e = ((x - q0) * (x - q0) / (d * d)).astype(f32)
    mean = (e.astype(np.float64).sum(1) / c).astype(f32)
    return (tau > 0) & (e > tau * mean[:, None]), mean


def spqr(W, H, bits, g, tau, rule, act):
    m, n = W.shape
    maxq = 2 ** bits - 1
    H = H.astype(np.float64).copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W = W.astype(f32).copy()
    W[:, dead] = 0
    perm = np.argsort(-np.diag(H), kind="stable") if act else np.arange(n)
    W, H = W[:, perm].copy(), H[np.ix_(perm, perm)]
    H += 0.01 * np.mean(np.diag(H)) * np.eye(n)
    U = np.linalg.cholesky(np.linalg.inv(H)).T.astype(f32)
    dU = np.diag(U).astype(np.float64)
    T = tau * np.mean(W.astype(np.float64).var(0, ddof=1) / (dU * dU)) if m > 1 else np.inf
    ng = (n + g - 1) // g
    codes = np.zeros((m, n), np.uint8)
    out = np.zeros((m, n), bool)
    val = np.zeros((m, n), f32)
    S = np.zeros((m, ng), f32)
    Z = np.zeros((m, ng), f32)
    mean = np.zeros(m, f32)
    loss = np.zeros(m)
    tau = f32(tau)
    for i1 in range(0, n, B):
        i2 = min(i1 + B, n)
        E = np.zeros((m, i2 - i1), f32)
        for i in range(i1, i2):
            if i % g == 0:
                k, c1 = i // g, min(i + g, n)
                x = W[:, i:c1]
                d = np.diag(U)[i:c1]
                flag, mean = likely(x, d, maxq, tau, rule, T)
                keep = ~flag
                s, z = minmax(x, keep, maxq)
                if rule == "obs":
                    s0, z0 = minmax(x, np.ones_like(x, bool), maxq)
                    none = ~keep.any(1)
                    s, z = np.where(none, s0, s), np.where(none, z0, z)
                S[:, k], Z[:, k] = bilevel(s), bilevel(z)
            k, d, w = i // g, U[i, i], W[:, i].copy()
            c, q = quant(w, S[:, k], Z[:, k], maxq)
            err = ((w - q) * (w - q) / (d * d)).astype(f32)
            if rule == "loo":
                o = (tau > 0) & (err.astype(np.float64) > T)
            else:
                o = (tau > 0) & (mean > 0) & (err > tau * mean)
            q = np.where(o, w.astype(np.float16).astype(f32), q)
            codes[:, i], out[:, i], val[:, i] = c, o, q
            diff = (w - q).astype(f32)
            loss += (diff * diff / (d * d) / f32(2)).astype(f32)
            E[:, i - i1] = diff / d
            W[:, i + 1:i2] -= np.outer(E[:, i - i1], U[i, i + 1:i2]).astype(f32)
        W[:, i2:] -= (E @ U[i1:i2, i2:]).astype(f32)
    inv = np.argsort(perm)
    gidx = np.zeros(n, np.int32)
    gidx[perm] = np.arange(n) // g
    return codes[:, inv], S, Z, out[:, inv], val[:, inv], loss, perm, gidx


def main():
    case, res, bits, g, tau = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    rule = sys.argv[6] if len(sys.argv) > 6 else "loo"
    act = len(sys.argv) > 7 and sys.argv[7] == "act"
    C, R = read(case), read(res)
    R.setdefault("outliers_idx", np.zeros(0, np.int64))  # absent when there are none
    R.setdefault("outliers_val", np.zeros(0, f32))
    codes, S, Z, out, val, loss, perm, gi = spqr(C["W"], C["H"], bits, g, tau, rule, act)
    m, n = codes.shape
    fails = 0

    def check(ok, what):
        nonlocal fails
        print("%-60s %s" % (what, "ok" if ok else "FAIL"))
        fails += not ok

    print("rule %s, %s, numpy outliers %.3f%%" % (rule, "act-order" if act else "column order", 100 * out.mean()))
    check(np.array_equal(R["perm"], perm) and np.array_equal(R["g_idx"], gi), "perm and g_idx equal numpy's")
    same = (R["codes"] == codes).mean()
    check(same >= CODE_MATCH, "codes identical %.4f%% (>= %.0f%%)" % (100 * same, 100 * CODE_MATCH))
    got = np.zeros(m * n, bool)
    got[R["outliers_idx"]] = True
    ref = out.reshape(-1)
    x, u = (got ^ ref).sum(), (got | ref).sum()
    check(x <= OUT_MATCH * max(u, 1), "outliers: numpy %d, mpiquant %d, differ %d (<= %.0f%% of %d)"
          % (ref.sum(), got.sum(), x, 100 * OUT_MATCH, u))
    srel = np.abs(R["scale"] - S) / np.abs(S)
    zab = np.abs(R["zero"] - Z)
    ok = ((srel <= STAT_REL) & (zab <= ZERO_ABS)).mean()
    check(ok >= STAT_MATCH, "scales/zeros agree on %.3f%% of (row, group)s" % (100 * ok))
    lr = abs(float(R["losses"].astype(np.float64).sum()) - loss.sum()) / loss.sum()
    check(lr <= LOSS_REL, "loss %.6g vs numpy %.6g (rel %.1e <= %.0e)" % (R["losses"].sum(), loss.sum(), lr, LOSS_REL))
    Q = (R["scale"][:, gi] * (R["codes"].astype(f32) - R["zero"][:, gi])).astype(f32).reshape(-1)
    Q[R["outliers_idx"]] += R["outliers_val"]
    check(np.array_equal(Q, R["Q"].reshape(-1)), "candidate Q == scale (codes - zero) + sparse")
    kept = np.abs(Q[got & ref] - val.reshape(-1)[got & ref]) <= 1e-6 * np.abs(val.reshape(-1)[got & ref]) + 1e-9
    check(kept.all(), "kept weights equal fp16(w) of numpy's sweep (both outliers)")
    print("spqr_ref: %s" % ("all ok" if not fails else "%d FAILED" % fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

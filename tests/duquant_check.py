#!/usr/bin/python3
"""Independent check of DuQuant's transforms (stories260K, block 0, q/k/v input).

Written from the DuQuant paper (Lin et al., NeurIPS 2024) with the
reproducibility conventions of include/mpiquant/rotate.h, not from the C:
  activations: X = RMSNorm(embed[ids]) * input_layernorm of block 0 over
    the calibration windows (float64); amax_j = max_t |X_tj|; the sample:
    per window its token of largest max_j |X_tj|; wmax_j = max over the
    rows of q, k, v of |W_ij|;
  s_j = max(max(amax_j, 1e-5)^a / max(wmax_j, 1e-5)^(1-a), 1e-5) (a = 0: 1);
  sample Z = sample / s;
  greedy rotation of a block of Z: repeat b times: k = first channel with
    max_t |Z_tk| >= max |Z| (1 - 1e-9), Z <- Z (E_k H E_k) (H the
    normalized Sylvester Hadamard matrix, E_k swapping 0 and k); keep the
    shortest prefix whose peak max |Z| is smallest (a later peak must be
    lower by a relative 1e-9 to count);
  zigzag: channels by max_t |(Z R1)_tj| descending (ties: lower index)
    dealt to the K blocks in the order 0..K-1, K-1..0, 0..; each block
    sorted likewise;
  R2: the greedy rotation of Z R1 P.
Checks: the checkpoint's amax and sample within 1e-5 relative of numpy's;
wmax exact; then on the checkpoint's f32 statistics: s within 1e-6
relative; the permutation identical; R1, R2 within 1e-6 absolute and
orthogonal, R1 not the identity everywhere; the stored (method none:
exact) q/k/v weights equal (W diag(s)) R1 P R2 within 1e-5 of their
largest entry.

usage: duquant_check.py MODEL_DIR CALIB_IDS_TXT NSAMPLES CKPT_DIR ALPHA BLOCK
"""
import functools, json, struct, sys

import h5py
import numpy as np

TIE = 1e-9


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop("__metadata__", None)
    out = {}
    for k, v in hdr.items():
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(v["shape"])
    return out


def hadamard(b):
    i = np.arange(b)
    par = np.array([[bin(x & y).count("1") & 1 for y in i] for x in i])
    return np.where(par == 1, -1.0, 1.0) / np.sqrt(b)


def step(k, b, H):
    p = np.arange(b)
    p[0], p[k] = k, 0
    return H[p][:, p]


def first_max(cm):
    return int(np.nonzero(cm >= cm.max() * (1 - TIE))[0][0])


def greedy(Z, b, H):
    """Z [m, b] -> (R [b, b] f32, Z R)"""
    V = Z.copy()
    peaks, ids, best = [np.abs(V).max()], [], 0
    for s in range(b if b > 1 else 0):
        k = first_max(np.abs(V).max(0))
        ids.append(k)
        V = V @ step(k, b, H)
        peaks.append(np.abs(V).max())
        if peaks[-1] < peaks[best] * (1 - TIE):
            best = s + 1
    M = np.eye(b)
    for k in ids[:best]:
        M = M @ step(k, b, H)
    R = M.astype(np.float32)
    return R, Z @ R.astype(np.float64)


def cmp_factory(u):
    def cmp(i, j):
        x, y = abs(u[i]), abs(u[j])
        if x > y * (1 + TIE) and x - y > 0:
            return -1
        if y > x * (1 + TIE) and y - x > 0:
            return 1
        return (i > j) - (i < j)
    return functools.cmp_to_key(cmp)


def zigzag(u, b):
    n = len(u)
    K = n // b
    key = cmp_factory(u)
    order = sorted(range(n), key=key)
    blocks = [[] for _ in range(K)]
    cur, up = 0, True
    for c in order:
        blocks[cur].append(c)
        if K == 1:
            continue
        if up and cur == K - 1:
            up = False
        elif not up and cur == 0:
            up = True
        else:
            cur += 1 if up else -1
    return np.array([c for blk in blocks for c in sorted(blk, key=key)])


def main():
    model, ids_txt, nsamp, ck, alpha, block = sys.argv[1:7]
    nsamp, alpha, block = int(nsamp), float(alpha), int(block)
    cfg = json.load(open(f"{model}/config.json"))
    st = read_st(f"{model}/model.safetensors")
    ids = np.array([[int(t) for t in l.split()] for l in open(ids_txt)][:nsamp])
    x = st["model.embed_tokens.weight"][ids.reshape(-1)].astype(np.float64)
    x = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + cfg["rms_norm_eps"])
    x = x * st["model.layers.0.input_layernorm.weight"]
    amax_ref = np.abs(x).max(0)
    xw = x.reshape(nsamp, ids.shape[1], -1)
    sample_ref = xw[np.arange(nsamp), np.abs(xw).max(2).argmax(1)]
    Ws = [st[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]
    wmax_ref = np.max([np.abs(w).max(0) for w in Ws], axis=0)
    n = len(amax_ref)
    b = 1
    while b * 2 <= block and n % (b * 2) == 0:
        b *= 2
    fails = 0

    def check(ok, msg):
        nonlocal fails
        print(("ok   " if ok else "FAIL ") + msg)
        fails += not ok

    with h5py.File(f"{ck}/blocks-000.h5", "r") as f:
        aux = {k: f[f"/aux/0/duquant.qkv.{k}"][...] for k in
               ("smooth", "perm", "r1", "r2", "amax", "wmax", "sample")}
        stored = [f[f"/layers/0/self_attn.{p}_proj/scales"][...] for p in "qkv"]
    amax, wmax = aux["amax"][:, 0], aux["wmax"][:, 0]
    rel = np.abs(amax - amax_ref).max() / np.abs(amax_ref).max()
    check(rel <= 1e-5, f"amax vs numpy activations: rel {rel:.3g} (tol 1e-5)")
    check(np.array_equal(wmax, wmax_ref.astype(np.float32)), "wmax exact")
    smp = aux["sample"]
    rel = np.abs(smp - sample_ref).max() / np.abs(sample_ref).max()
    check(smp.shape == sample_ref.shape and rel <= 1e-5,
          f"sample ({smp.shape[0]} rows) vs numpy: rel {rel:.3g} (tol 1e-5)")
    # the algorithm on the checkpoint's statistics
    a64, w64 = amax.astype(np.float64), wmax.astype(np.float64)
    s = np.ones(n) if alpha <= 0 else \
        np.maximum(a64.clip(1e-5) ** alpha / w64.clip(1e-5) ** (1 - alpha), 1e-5)
    s = s.astype(np.float32)
    rel = np.abs(aux["smooth"][:, 0] / s - 1).max()
    check(rel <= 1e-6, f"smoothing factors: rel {rel:.3g} (tol 1e-6)")
    H = hadamard(b)
    Z = smp.astype(np.float64) / s.astype(np.float64)
    R1 = np.zeros((n, b), np.float32)
    for k in range(n // b):
        R1[k * b:(k + 1) * b], Z[:, k * b:(k + 1) * b] = greedy(Z[:, k * b:(k + 1) * b], b, H)
    perm = zigzag(np.abs(Z).max(0), b)
    Z = Z[:, perm]
    R2 = np.zeros((n, b), np.float32)
    for k in range(n // b):
        R2[k * b:(k + 1) * b], Z[:, k * b:(k + 1) * b] = greedy(Z[:, k * b:(k + 1) * b], b, H)
    check(np.array_equal(aux["perm"][:, 0].astype(np.int64), perm),
          f"zigzag permutation ({n // b} blocks of {b}) identical")
    for name, R in (("r1", R1), ("r2", R2)):
        d = np.abs(aux[name] - R).max()
        check(d <= 1e-6, f"{name}: max diff {d:.3g} (tol 1e-6)")
        orth = max(np.abs(R[k * b:(k + 1) * b].astype(np.float64) @
                          R[k * b:(k + 1) * b].T.astype(np.float64) - np.eye(b)).max()
                   for k in range(n // b))
        check(orth <= 1e-6, f"{name} orthogonal: {orth:.3g}")
    steps = sum(not np.allclose(R1[k * b:(k + 1) * b], np.eye(b)) for k in range(n // b))
    check(steps > 0, f"R1 is not the identity in {steps} of {n // b} blocks")

    def transform(w):  # rows: (w * s) R1 P R2
        y = w.astype(np.float64) * s.astype(np.float64)
        z = np.empty_like(y)
        for k in range(n // b):
            z[:, k * b:(k + 1) * b] = y[:, k * b:(k + 1) * b] @ R1[k * b:(k + 1) * b].astype(np.float64)
        z = z[:, perm]
        for k in range(n // b):
            y[:, k * b:(k + 1) * b] = z[:, k * b:(k + 1) * b] @ R2[k * b:(k + 1) * b].astype(np.float64)
        return y

    for p, w, q in zip("qkv", Ws, stored):
        ref = transform(w)
        d = np.abs(q - ref).max() / np.abs(ref).max()
        check(d <= 1e-5, f"{p}_proj fused weights: rel {d:.3g} (tol 1e-5)")
    print(f"duquant_check: {13 - fails} passed, {fails} failed")
    sys.exit(1 if fails else 0)


main()

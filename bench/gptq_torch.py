#!/usr/bin/python3
"""GPTQ of one layer in PyTorch, as the reference implementation computes it:
the timing baseline of bench/layer_torch.sh (and, by --check, a tool to show
that this transcription is the reference algorithm).

Written from the reference conventions in ../shared/golden/README.md (rules
1-17: per-channel parameters first, dead columns, static groups, act-order,
relative damping, potrf -> potri -> potrf('U'), lazy-batch column loop with
dynamic groups from the outer working W, round half to even), with the
reference's data layout and f32 arithmetic: W [out, in] rows = output
channels, the factor on the whole [in, in] matrix, torch ops on [out, *]
slices.  Only the time of the method is measured (H given, file reading and
writing excluded), as the reference's "quant time".

  /usr/bin/python3 bench/gptq_torch.py CASE.safetensors OUT.safetensors \
      [--bits 4] [--group 128] [--sym] [--act-order] [--static-groups] \
      [--blocksize 128] [--damp 0.01] [--threads 1]

CASE holds W F32 [out, in] and H F32 [in, in]; OUT gets Q, codes, scale,
zero, perm, g_idx, losses (the tensors ../shared/golden/check_gptq.py reads).
Prints one line "gptq_torch_s <seconds> loss_total <sum of losses>".
"""
import argparse
import json
import struct
import sys
import time

import numpy as np
import torch

_DT = {"F32": np.float32, "F64": np.float64, "U8": np.uint8, "I32": np.int32, "I64": np.int64}
_NAME = {np.dtype(v): k for k, v in _DT.items()}


def read_st(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {}) or {}
    out = {}
    for k, v in h.items():
        s, e = v["data_offsets"]
        a = np.frombuffer(b[8 + n + s:8 + n + e], np.dtype(_DT[v["dtype"]]).newbyteorder("<"))
        out[k] = a.reshape(v["shape"])
    return out, meta


def write_st(path, tensors, meta=None):
    hdr, blobs, off = {}, [], 0
    for k, a in tensors.items():
        a = np.ascontiguousarray(a)
        hdr[k] = {"dtype": _NAME[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    if meta:
        hdr["__metadata__"] = {k: str(v) for k, v in meta.items()}
    j = json.dumps(hdr).encode()
    j += b" " * (-len(j) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(j)) + j)
        for b in blobs:
            f.write(b)


def params(x, maxq, sym):
    """Rule 11: per-row scale and zero point over the columns of x [rows, k]."""
    zero = torch.zeros(x.shape[0])
    xmin = torch.minimum(x.min(1).values, zero)
    xmax = torch.maximum(x.max(1).values, zero)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        neg = xmin < 0
        xmin[neg] = -xmax[neg]
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = -1.0
    xmax[both] = 1.0
    scale = (xmax - xmin) / maxq
    if sym:
        zp = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zp = torch.round(-xmin / scale)
    return scale, zp


def quantize(w, scale, zp, maxq):
    """Rule 12 on one column w [rows]: codes and dequantized values."""
    code = torch.clamp(torch.round(w / scale) + zp, 0, maxq)
    return scale * (code - zp), code


def gptq(W, H, bits, group, sym, act_order, static_groups, blocksize, percdamp):
    W = W.clone()
    H = H.clone()
    rows, n = W.shape
    maxq = 2 ** bits - 1
    scale, zp = params(W, maxq, sym)  # rule 3: per channel, before the dead fix
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    static = []
    if group != -1 and static_groups:  # rule 5
        static = [params(W[:, k:k + group], maxq, sym) for k in range(0, n, group)]
    perm = torch.arange(n)
    if act_order:  # rule 6
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    H[range(n), range(n)] += percdamp * torch.mean(torch.diag(H))  # rule 7
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    losses = torch.zeros(rows)
    scales, zeros = [], []
    for i1 in range(0, n, blocksize):  # rule 9
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if group != -1:
                if static_groups:
                    scale, zp = static[int(perm[c]) // group]
                elif c % group == 0:
                    scale, zp = params(W[:, c:c + group], maxq, sym)
                    scales.append(scale)
                    zeros.append(zp)
            w = W1[:, i]
            d = U1[i, i]
            q, code = quantize(w, scale, zp, maxq)
            Q[:, c] = q
            codes[:, c] = code
            losses += (w - q) ** 2 / d ** 2 / 2
            e = (w - q) / d
            W1[:, i:] -= e.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            E1[:, i] = e
        W[:, i2:] -= E1.matmul(U[i1:i2, i2:])
    inv = torch.argsort(perm)  # rule 10
    Q, codes = Q[:, inv], codes[:, inv]
    g_idx = torch.zeros(n, dtype=torch.int32)
    if group == -1:
        S, Z = scale.unsqueeze(1), zp.unsqueeze(1)
    elif static_groups:
        S = torch.stack([s for s, _ in static], 1)
        Z = torch.stack([z for _, z in static], 1)
        g_idx = (torch.arange(n) // group).to(torch.int32)
    else:  # rule 15: groups in processing order
        S, Z = torch.stack(scales, 1), torch.stack(zeros, 1)
        g_idx[perm] = (torch.arange(n) // group).to(torch.int32)
    return Q, codes, S, Z, perm.to(torch.int32), g_idx, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case")
    ap.add_argument("out")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--static-groups", action="store_true")
    ap.add_argument("--blocksize", type=int, default=128)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t, _ = read_st(a.case)
    for k in ("W", "H"):
        if k not in t:
            sys.exit("%s: no tensor %s (expected W [out, in] and H [in, in])" % (a.case, k))
    W = torch.from_numpy(np.array(t["W"], np.float32))
    H = torch.from_numpy(np.array(t["H"], np.float32))
    if H.shape != (W.shape[1], W.shape[1]):
        sys.exit("%s: H is %s, expected [%d, %d]" % (a.case, list(H.shape), W.shape[1], W.shape[1]))
    t0 = time.perf_counter()
    Q, codes, S, Z, perm, g_idx, losses = gptq(W, H, a.bits, a.group, a.sym, a.act_order,
                                               a.static_groups, a.blocksize, a.damp)
    dt = time.perf_counter() - t0
    loss = float(losses.sum())
    write_st(a.out, {"Q": Q.numpy(), "codes": codes.numpy().astype(np.uint8),
                     "scale": S.numpy(), "zero": Z.numpy(), "perm": perm.numpy(),
                     "g_idx": g_idx.numpy(), "losses": losses.numpy()},
             {"loss_total": repr(loss), "torch": torch.__version__})
    print("gptq_torch_s %.3f loss_total %.9g" % (dt, loss))


if __name__ == "__main__":
    main()

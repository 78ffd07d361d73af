#!/usr/bin/env python3
"""Independent float64 forward of Llama-family decoders in numpy, written from
the Hugging Face modeling code's description (modeling_llama / qwen3 /
mixtral / qwen2_moe / qwen3_moe), checked against mpiquant's dump
(tests/mpi/test_arch_dump.c): logits and MoE routing.

  moe_ref.py MODEL_DIR IDS_FILE DUMP_DIR
  moe_ref.py --counts MODEL_DIR CALIB_IDS CKPT_DIR
      the per-expert routed-token counts of `quantize` (manifest.json,
      block stats "expert_tokens") equal the routing of the calibration
      windows through the model with every quantized linear replaced by the
      checkpoint's dequantized weight, scale * (code - zero) per group
      (read with h5py; the routers see the quantized blocks the quantizer
      did), up to tokens whose k-th/(k+1)-th probabilities are within TOL_TIE
  moe_ref.py --counts-fp MODEL_DIR CALIB_IDS CKPT_DIR
      the same through the unquantized model (methods that calibrate every
      block on the fp model's hidden states: AWQ)
  moe_ref.py --samples MODEL_DIR SAMPLES.jsonl
      the ragged task forward: every request of `eval --task --log-samples`
      (its ctx_tokens + cont_tokens, ctx not truncated) rescored here;
      |ll_C - ll_numpy| <= TOL_LL_TOKEN per scored token

Semantics implemented here (not taken from mpiquant's C):
  block:  h = x + o_proj(attn(rmsnorm(x) * input_layernorm))
          out = h + ffn(rmsnorm(h) * post_attention_layernorm)
  rmsnorm(x) = x / sqrt(mean(x^2) + eps)
  attention: q, k, v projections (+ bias when the config has it); Qwen3:
          q_norm / k_norm RMSNorm over each head's head_dim before RoPE;
          RoPE rotate_half with inv_freq = theta^(-2i/head_dim); causal
          softmax(q k^T / sqrt(head_dim)) v with grouped kv heads.
  dense ffn: down(silu(gate(x)) * up(x))
  MoE ffn (Mixtral / Qwen2-MoE / Qwen3-MoE): p = softmax(router(x)) over all
          experts, the top-k of p (torch.topk; ties to the lower index),
          divided by their sum when renormalised (Mixtral always, Qwen
          norm_topk_prob), y = sum_j p_j * expert_j(x); Qwen2-MoE adds
          sigmoid(shared_expert_gate(x)) * shared_expert(x).
          Qwen layers are MoE iff not in mlp_only_layers and
          (layer + 1) % decoder_sparse_step == 0.
Tolerance: TOL_LOGIT 1e-4 absolute on the logits (mpiquant runs in f32, the
reference in f64; the tiny models' logits are O(1)); routing must be the
same expert set for every token whose k-th and (k+1)-th probabilities differ
by more than TOL_TIE (else f32 rounding may legitimately swap them), and the
weights within TOL_WEIGHT.
"""
import glob, json, struct, sys
import numpy as np

TOL_LOGIT = 1e-4
TOL_TIE = 1e-6
TOL_WEIGHT = 1e-5
TOL_LL_TOKEN = 3e-5  # as task_check.py: f32 logits rounding, 10x measured


def layer_is_moe(c, l):
    """Hugging Face's rule: Mixtral every layer; Qwen2/3-MoE unless in
    mlp_only_layers, every decoder_sparse_step-th layer."""
    arch = c["architectures"][0]
    if arch == "MixtralForCausalLM":
        return True
    if arch in ("Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM"):
        return (l not in (c.get("mlp_only_layers") or []) and c.get("num_experts", 0) > 0
                and (l + 1) % c.get("decoder_sparse_step", 1) == 0)
    return False


def expected_linears(c, nblocks):
    """Quantized linears of blocks [0, nblocks): 7 per dense block; an MoE
    block has q/k/v/o, 3 per expert and 3 for a Qwen2-MoE shared expert."""
    n = 0
    for l in range(nblocks):
        if layer_is_moe(c, l):
            e = c.get("num_local_experts", 8) if c["architectures"][0] == "MixtralForCausalLM" \
                else c["num_experts"]
            sh = c["architectures"][0] == "Qwen2MoeForCausalLM" and \
                c.get("shared_expert_intermediate_size", 5632) > 0
            n += 4 + 3 * e + (3 if sh else 0)
        else:
            n += 7
    return n


def load_tensors(d):
    T = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            raw = b[8 + n + s:8 + n + e]
            if v["dtype"] == "F32":
                a = np.frombuffer(raw, dtype="<f4")
            elif v["dtype"] == "BF16":
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise SystemExit("unsupported dtype %s of %s" % (v["dtype"], k))
            T[k] = a.astype(np.float64).reshape(v["shape"])
    return T


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope(x, pos, theta, hd):
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.outer(pos, inv)
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    rot = np.concatenate([-x2, x1], -1)
    return x * cos + rot * sin


class Model:
    def __init__(self, d):
        self.c = json.load(open(d + "/config.json"))
        self.T = load_tensors(d)
        c = self.c
        self.arch = c["architectures"][0]
        self.H = c["hidden_size"]
        self.nq = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads") or self.nq
        self.hd = c.get("head_dim") or self.H // self.nq
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.L = c["num_hidden_layers"]

    def g(self, name):
        return self.T[name]

    def lin(self, x, name):
        y = x @ self.g(name + ".weight").T
        if name + ".bias" in self.T:
            y = y + self.g(name + ".bias")
        return y

    def is_moe(self, l):
        return layer_is_moe(self.c, l)

    def attn(self, x, l):
        p = "model.layers.%d.self_attn." % l
        n, hd = x.shape[0], self.hd
        q = self.lin(x, p + "q_proj").reshape(n, self.nq, hd)
        k = self.lin(x, p + "k_proj").reshape(n, self.nkv, hd)
        v = self.lin(x, p + "v_proj").reshape(n, self.nkv, hd)
        if p + "q_norm.weight" in self.T:   # Qwen3
            q = rmsnorm(q, self.g(p + "q_norm.weight"), self.eps)
            k = rmsnorm(k, self.g(p + "k_norm.weight"), self.eps)
        pos = np.arange(n)
        q, k = rope(q, pos, self.theta, hd), rope(k, pos, self.theta, hd)
        rep = self.nq // self.nkv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        s = s + np.triu(np.full((n, n), -np.inf), 1)[None]
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(n, self.nq * hd)
        return self.lin(o, p + "o_proj")

    def mlp(self, x, pre, names):
        gn, un, dn = names
        return self.lin(silu(self.lin(x, pre + gn)) * self.lin(x, pre + un), pre + dn)

    def moe(self, x, l):
        c = self.c
        if self.arch == "MixtralForCausalLM":
            pre = "model.layers.%d.block_sparse_moe." % l
            names, E, norm = ("w1", "w3", "w2"), c.get("num_local_experts", 8), True
        else:
            pre = "model.layers.%d.mlp." % l
            names, E = ("gate_proj", "up_proj", "down_proj"), c["num_experts"]
            norm = bool(c.get("norm_topk_prob", False))
        k = c["num_experts_per_tok"]
        logits = x @ self.g(pre + "gate.weight").T
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        # stable sort of -p: equal probabilities keep the lower index first
        idx = np.argsort(-p, axis=-1, kind="stable")[:, :k]
        wt = np.take_along_axis(p, idx, -1)
        if norm:
            wt = wt / wt.sum(-1, keepdims=True)
        srt = np.sort(p, -1)[:, ::-1]
        margin = srt[:, k - 1] - srt[:, k] if k < E else np.full(len(x), np.inf)
        y = np.zeros_like(x)
        for e in range(E):
            rows, slot = np.nonzero(idx == e)
            if len(rows):
                y[rows] += wt[rows, slot][:, None] * self.mlp(x[rows], pre + "experts.%d." % e, names)
        if self.arch == "Qwen2MoeForCausalLM" and pre + "shared_expert_gate.weight" in self.T:
            sg = 1.0 / (1.0 + np.exp(-(x @ self.g(pre + "shared_expert_gate.weight").T)))
            y += sg * self.mlp(x, pre + "shared_expert.", names)
        return y, idx, wt, margin

    def forward(self, ids):
        x = self.g("model.embed_tokens.weight")[ids]
        routes = []
        for l in range(self.L):
            p = "model.layers.%d." % l
            h = x + self.attn(rmsnorm(x, self.g(p + "input_layernorm.weight"), self.eps), l)
            hn = rmsnorm(h, self.g(p + "post_attention_layernorm.weight"), self.eps)
            if self.is_moe(l):
                y, idx, wt, margin = self.moe(hn, l)
                routes.append((idx, wt, margin))
            else:
                y = self.mlp(hn, p + "mlp.", ("gate_proj", "up_proj", "down_proj"))
            x = h + y
        head = self.T.get("lm_head.weight", self.T["model.embed_tokens.weight"])
        return rmsnorm(x, self.g("model.norm.weight"), self.eps) @ head.T, routes


def check_samples(mdir, path):
    m = Model(mdir)
    worst, n = 0.0, 0
    ok = True
    for ln in open(path):
        r = json.loads(ln)
        if r["ctx_truncated"] or r["cont_truncated"]:
            continue
        toks = r["ctx_tokens"] + r["cont_tokens"]
        nc = len(r["cont_tokens"])
        lg, _ = m.forward(np.array(toks[:-1]))
        lg = lg[-nc:]
        lse = lg.max(-1) + np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1))
        ll = float((lg[np.arange(nc), r["cont_tokens"]] - lse).sum())
        d = abs(ll - r["loglikelihood"]) / nc
        worst = max(worst, d)
        n += 1
        if d > TOL_LL_TOKEN:
            ok = False
            print("  %s choice %d: C %.6f numpy %.6f" % (r["id"], r["choice"], r["loglikelihood"], ll))
    print("samples: %d requests, max |ll_C - ll_numpy| per token %.3g (tolerance %g)"
          % (n, worst, TOL_LL_TOKEN))
    ok &= n > 0
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def load_ckpt_weights(m, ck):
    import h5py
    man = json.load(open(ck + "/manifest.json"))
    n = 0
    for fe in man["files"]:
        with h5py.File(ck + "/" + fe["file"], "r") as h:
            for blk in range(fe["first_block"], fe["first_block"] + fe["nblocks"]):
                g = h["layers"][str(blk)]
                for mod in g.keys():
                    c, s = g[mod]["codes"][...].astype(np.float32), g[mod]["scales"][...]
                    z, gi = g[mod]["zeros"][...], g[mod]["g_idx"][...]
                    w = (s[:, gi] * (c - z[:, gi])).astype(np.float32)
                    m.T["model.layers.%d.%s.weight" % (blk, mod)] = w.astype(np.float64)
                    n += 1
    return n


def check_counts(mdir, idsf, ck, fp=False):
    m = Model(mdir)
    if not fp:
        print("%d linears from the checkpoint" % load_ckpt_weights(m, ck))
    wins = [list(map(int, ln.split())) for ln in open(idsf) if ln.strip()]
    man = json.load(open(ck + "/manifest.json"))
    stats = {b["block"]: b["stats"] for b in man["completed_blocks"]}
    E = m.c.get("num_local_experts", 8) if m.arch == "MixtralForCausalLM" else m.c.get("num_experts", 0)
    cnt, near = {}, {}
    for w in wins:
        _, routes = m.forward(np.array(w))
        blocks = [l for l in range(m.L) if m.is_moe(l)]
        for b, (idx, wt, margin) in zip(blocks, routes):
            cnt[b] = cnt.get(b, 0) + np.bincount(idx.reshape(-1), minlength=E)
            near[b] = near.get(b, 0) + int((margin <= TOL_TIE).sum())
    ok = len(cnt) > 0
    for b in sorted(cnt):
        got = np.array(stats[b]["expert_tokens"])
        d = int(np.abs(got - cnt[b]).sum())
        print("block %d: quantize %s, numpy %s, %d near-ties" % (b, got.tolist(), cnt[b].tolist(), near[b]))
        ok &= d <= 2 * near[b]
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def main():
    if sys.argv[1] == "--counts":
        return check_counts(sys.argv[2], sys.argv[3], sys.argv[4])
    if sys.argv[1] == "--counts-fp":
        return check_counts(sys.argv[2], sys.argv[3], sys.argv[4], fp=True)
    if sys.argv[1] == "--samples":
        return check_samples(sys.argv[2], sys.argv[3])
    mdir, idsf, dump = sys.argv[1:4]
    wins = [list(map(int, ln.split())) for ln in open(idsf) if ln.strip()]
    m = Model(mdir)
    V = m.c["vocab_size"]
    got = np.fromfile(dump + "/logits.f32", dtype="<f4").reshape(-1, V)
    ri = np.fromfile(dump + "/route.i32", dtype="<i4")
    rw = np.fromfile(dump + "/route.f32", dtype="<f4")
    nt = sum(len(w) for w in wins)
    ok = True
    ref_logits, ref_routes = [], []
    for w in wins:
        lg, routes = m.forward(np.array(w))
        ref_logits.append(lg)
        ref_routes.append(routes)
    ref = np.concatenate(ref_logits)
    err = np.abs(ref - got).max()
    print("logits: max |mpiquant - numpy| = %.3g over %d x %d (max |logit| %.3g), tolerance %g"
          % (err, ref.shape[0], V, np.abs(ref).max(), TOL_LOGIT))
    ok &= bool(err <= TOL_LOGIT)
    nmoe = len(ref_routes[0])
    if nmoe:
        k = m.c["num_experts_per_tok"]
        ri = ri.reshape(nmoe, nt, k)
        rw = rw.reshape(nmoe, nt, k)
        bad = close = 0
        werr = 0.0
        for b in range(nmoe):
            idx = np.concatenate([r[b][0] for r in ref_routes])
            wt = np.concatenate([r[b][1] for r in ref_routes])
            mg = np.concatenate([r[b][2] for r in ref_routes])
            for t in range(nt):
                if mg[t] <= TOL_TIE:
                    close += 1
                    continue
                if list(idx[t]) != list(ri[b, t]):
                    bad += 1
                    if bad <= 5:
                        print("  block %d token %d: numpy %s, mpiquant %s" % (b, t, idx[t], ri[b, t]))
                else:
                    werr = max(werr, np.abs(wt[t] - rw[b, t]).max())
        hist = np.bincount(ri.reshape(-1), minlength=m.c.get("num_experts", m.c.get("num_local_experts", 0)))
        print("routing: %d MoE blocks x %d tokens x top-%d, %d differ, %d near-ties skipped, "
              "weights max err %.3g (tolerance %g); tokens per expert %s"
              % (nmoe, nt, k, bad, close, werr, TOL_WEIGHT, hist.tolist()))
        ok &= bad == 0 and werr <= TOL_WEIGHT and close < nt * nmoe // 10
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

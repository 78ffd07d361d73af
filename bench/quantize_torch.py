#!/usr/bin/python3
"""Whole-model GPTQ of a small Llama in PyTorch, driven as the reference
driver is (../shared/golden/README.md, "Model-level reference perplexities"):
the timing baseline of bench/quantize.sh, checked against the golden table.

A Llama forward written here (HF layout, RMSNorm, rotate_half RoPE, GQA,
SwiGLU, f32), the calibration windows of golden/calib/<model>_calib_ids.txt,
true-sequential GPTQ per block: [k, v, q] -> [o] -> [up, gate] -> [down], the
Hessian of a group from a forward in which the earlier groups of the block
are already quantized, one add_batch per window in window order (rule 1's f32
running average), each linear by bench/gptq_torch.py (which reproduces the
golden reference codes); the next block sees this block's quantized output.
The block runs in stages that stop at the current group's inputs (the
reference driver does the same), one window (batch 1) at a time.

Timed: the calibration forwards and the GPTQ solves (the reference's "quant
time"); not timed: reading the model, the perplexity evaluation afterwards.

  /usr/bin/python3 bench/quantize_torch.py MODEL_DIR CALIB_IDS [EVAL_IDS]
      [--bits 4] [--group 32] [--act-order] [--threads 1]

Prints "quant_torch_s <s>" and, with EVAL_IDS (one window per line), the
perplexity of the quantized model (NLL of tokens 2..L of every window).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptq_torch import gptq, read_st  # noqa: E402


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    t, _ = read_st(os.path.join(model_dir, "model.safetensors"))
    w = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in t.items()}
    return cfg, w


def rmsnorm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


class Rope:
    def __init__(self, cfg, L):
        hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(L).float(), inv)
        e = torch.cat((f, f), -1)
        self.cos, self.sin = e.cos(), e.sin()

    def __call__(self, x):  # x [heads, L, hd]
        h = x.shape[-1] // 2
        rot = torch.cat((-x[..., h:], x[..., :h]), -1)
        return x * self.cos + rot * self.sin


def attention(cfg, x, q_w, k_w, v_w, rope, mask):
    """x [L, d] (normed input) -> attention output [L, nq*hd] before o_proj."""
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    L = x.shape[0]
    hd = q_w.shape[0] // nq
    q = rope((x @ q_w.T).view(L, nq, hd).transpose(0, 1))
    k = rope((x @ k_w.T).view(L, nkv, hd).transpose(0, 1))
    v = (x @ v_w.T).view(L, nkv, hd).transpose(0, 1)
    rep = nq // nkv
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    s = (q @ k.transpose(1, 2)) / math.sqrt(hd) + mask
    return (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(L, nq * hd)


class Hessian:
    """Rule 1: f32 running average, one add_batch per window."""

    def __init__(self, n):
        self.H, self.N = torch.zeros(n, n), 0

    def add(self, x):  # x [L, n], one sequence
        self.H *= self.N / (self.N + 1)
        self.N += 1
        x = math.sqrt(2 / self.N) * x
        self.H += x.T @ x


def quantize_model(cfg, w, calib, bits, group, act_order):
    nl, eps = cfg["num_hidden_layers"], cfg["rms_norm_eps"]
    L = calib.shape[1]
    rope = Rope(cfg, L)
    mask = torch.full((L, L), float("-inf")).triu(1)
    xs = [w["model.embed_tokens.weight"][ids] for ids in calib]

    def solve(names, inputs):
        """The group's Hessian from its inputs (one add_batch per window, in
        window order), then GPTQ of each linear of the group with it."""
        H = Hessian(inputs[0].shape[1])
        for x in inputs:
            H.add(x)
        for n in names:
            w[n] = gptq(w[n], H.H, bits, group, False, act_order, False, 128, 0.01)[0]

    for i in range(nl):
        p = "model.layers.%d." % i
        a = p + "self_attn."
        m = p + "mlp."
        h1 = [rmsnorm(x, w[p + "input_layernorm.weight"], eps) for x in xs]
        solve([a + "k_proj.weight", a + "v_proj.weight", a + "q_proj.weight"], h1)
        att = [attention(cfg, x, w[a + "q_proj.weight"], w[a + "k_proj.weight"],
                         w[a + "v_proj.weight"], rope, mask) for x in h1]
        solve([a + "o_proj.weight"], att)
        hs = [x + y @ w[a + "o_proj.weight"].T for x, y in zip(xs, att)]
        h2 = [rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps) for x in hs]
        solve([m + "up_proj.weight", m + "gate_proj.weight"], h2)
        act = [torch.nn.functional.silu(x @ w[m + "gate_proj.weight"].T) * (x @ w[m + "up_proj.weight"].T)
               for x in h2]
        solve([m + "down_proj.weight"], act)
        xs = [x + y @ w[m + "down_proj.weight"].T for x, y in zip(hs, act)]


def perplexity(cfg, w, windows):
    nl, eps = cfg["num_hidden_layers"], cfg["rms_norm_eps"]
    L = windows.shape[1]
    rope = Rope(cfg, L)
    mask = torch.full((L, L), float("-inf")).triu(1)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    nll, cnt = 0.0, 0
    for ids in windows:
        x = w["model.embed_tokens.weight"][ids]
        for i in range(nl):
            p, a, m = "model.layers.%d." % i, "model.layers.%d.self_attn." % i, "model.layers.%d.mlp." % i
            h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
            x = x + attention(cfg, h, w[a + "q_proj.weight"], w[a + "k_proj.weight"],
                              w[a + "v_proj.weight"], rope, mask) @ w[a + "o_proj.weight"].T
            h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
            x = x + (torch.nn.functional.silu(h @ w[m + "gate_proj.weight"].T) *
                     (h @ w[m + "up_proj.weight"].T)) @ w[m + "down_proj.weight"].T
        lg = rmsnorm(x, w["model.norm.weight"], eps) @ head.T
        lp = torch.log_softmax(lg.double(), -1)
        nll -= float(lp[torch.arange(L - 1), ids[1:]].sum())
        cnt += L - 1
    return math.exp(nll / cnt)


def read_ids(path):
    return torch.tensor([[int(t) for t in line.split()] for line in open(path) if line.strip()])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("eval", nargs="?")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, w = load(a.model)
    calib = read_ids(a.calib)
    t0 = time.perf_counter()
    with torch.no_grad():
        quantize_model(cfg, w, calib, a.bits, a.group, a.act_order)
    print("quant_torch_s %.3f" % (time.perf_counter() - t0))
    if a.eval:
        with torch.no_grad():
            print("ppl %.4f" % perplexity(cfg, w, read_ids(a.eval)))


if __name__ == "__main__":
    main()

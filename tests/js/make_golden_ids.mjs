// Writes tests/fixtures/tokenizers/hf_golden_ids.json: the ids Hugging
// Face's Rust tokenizers (Node binding, version in package.json) gives for
// the small fixture texts, so that io_tokenizer_hf_golden checks them
// without node. Usage (after npm ci here): node make_golden_ids.mjs
import fs from 'fs';
import path from 'path';
import { createRequire } from 'module';
const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');
const dir = path.join(path.dirname(new URL(import.meta.url).pathname), '../fixtures/tokenizers');
const cases = [];
for (const tok of ['hf_qwen_nfc.json', 'hf_flags.json', 'hf_gpt2_nfd.json', 'hf_nfkc.json',
  'hf_nfkd.json'])
  for (const text of ['unicode_stress.txt', 'added_tokens.txt']) {
    const t = Tokenizer.fromString(fs.readFileSync(path.join(dir, tok), 'utf8'));
    const e = await t.encode(fs.readFileSync(path.join(dir, text), 'utf8'), null,
      { addSpecialTokens: false });
    cases.push({ tokenizer: tok, text, ids: e.getIds() });
  }
const version = JSON.parse(fs.readFileSync(require.resolve('tokenizers/package.json'), 'utf8')).version;
fs.writeFileSync(path.join(dir, 'hf_golden_ids.json'),
  JSON.stringify({ reference: `tokenizers ${version} (Rust, Node binding)`, cases }) + '\n');
console.log(cases.map((c) => `${c.tokenizer} x ${c.text}: ${c.ids.length} ids`).join('\n'));

# io: safetensors, config.json, tokenizer.json, token files; inspect/tokenize.
qz_test_program(qzt_io_safetensors unit/test_io_safetensors.c)
qz_add_test(NAME io_safetensors COMMAND qzt_io_safetensors TIMEOUT 60 LABELS io)
qz_test_program(qzt_io_config unit/test_io_config.c)
qz_add_test(NAME io_config COMMAND qzt_io_config TIMEOUT 60 LABELS io)
qz_test_program(qzt_io_tokens unit/test_io_tokens.c)
qz_add_test(NAME io_tokens COMMAND qzt_io_tokens TIMEOUT 60 LABELS io)

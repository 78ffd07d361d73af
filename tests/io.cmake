# io: safetensors, config.json, tokenizer.json, token files; inspect/tokenize.
qz_test_program(qzt_io_safetensors unit/test_io_safetensors.c)
qz_add_test(NAME io_safetensors COMMAND qzt_io_safetensors TIMEOUT 60 LABELS io)
qz_test_program(qzt_io_config unit/test_io_config.c)
qz_add_test(NAME io_config COMMAND qzt_io_config TIMEOUT 60 LABELS io)
qz_test_program(qzt_io_tokens unit/test_io_tokens.c)
qz_add_test(NAME io_tokens COMMAND qzt_io_tokens TIMEOUT 60 LABELS io)
qz_test_program(qzt_io_tokenizer unit/test_io_tokenizer.c)
qz_add_test(NAME io_tokenizer COMMAND qzt_io_tokenizer TIMEOUT 120 LABELS io)
# Byte-level BPE split boundaries; with QZ_LLAMA3_TOKENIZER set in the
# environment (see docs/io.md) also the full Llama-3 ids.
qz_test_program(qzt_io_bytelevel unit/test_io_bytelevel.c)
qz_add_test(NAME io_bytelevel COMMAND qzt_io_bytelevel TIMEOUT 60 LABELS io
  ENV "QZ_LLAMA3_TOKENIZER=$ENV{QZ_LLAMA3_TOKENIZER}")

# CLI: inspect and tokenize (rank 0 works, every rank returns the same status)
set(M $<TARGET_FILE:mpiquant>)
set(QZ_MODELS ${MPIQUANT_SHARED_DIR}/models)
qz_add_test(NAME io_cli_inspect_model TIMEOUT 60 COMMAND ${QZ_EXPECT} 0
  "LlamaForCausalLM" "47 tensors, 260,032 parameters" "dtypes: F32 \\(47 tensors\\)"
  "config check: ok" "lm_head: model.embed_tokens.weight"
  "layer 4:" "  mlp.down_proj.weight +F32 +\\[64,172\\]"
  -- ${M} inspect ${QZ_MODELS}/stories260K-hf)
qz_add_test(NAME io_cli_inspect_json TIMEOUT 60 COMMAND ${QZ_EXPECT} 0
  "\"tensors\": 47," "\"parameters\": 260032," "\"kind\": \"model\""
  "\"num_key_value_heads\": 4" "\"BF16\": 47"
  -- ${M} inspect --json ${QZ_MODELS}/stories260K-hf-bf16)
qz_add_test(NAME io_cli_inspect_file TIMEOUT 60 COMMAND ${QZ_EXPECT} 0
  "safetensors: " "47 tensors, 936,448 parameters" "format = pt"
  "model.layers.0.self_attn.k_proj.weight +F32 +\\[64,128\\]"
  -- ${M} inspect ${QZ_MODELS}/babyllama-tok105-hf/model.safetensors)
qz_add_test(NAME io_cli_inspect_help TIMEOUT 30 COMMAND ${QZ_EXPECT} 0
  "usage: mpiquant inspect PATH \\[--json\\]" -- ${M} inspect --help)
qz_add_test(NAME io_cli_inspect_missing TIMEOUT 30 COMMAND ${QZ_EXPECT} 4
  "QZ_ERR_IO.*cannot open /nonexistent/model" -- ${M} inspect /nonexistent/model)
qz_add_test(NAME io_cli_inspect_badopt TIMEOUT 30 COMMAND ${QZ_EXPECT} 2
  "unknown option '--bogus'" -- ${M} inspect --bogus x)
qz_add_test(NAME io_cli_tokenize_help TIMEOUT 30 COMMAND ${QZ_EXPECT} 0
  "usage: mpiquant tokenize --model DIR --text FILE" -- ${M} tokenize --help)
qz_add_test(NAME io_cli_tokenize_usage TIMEOUT 30 COMMAND ${QZ_EXPECT} 2
  "--model DIR and --text FILE are required" -- ${M} tokenize --model x)
qz_add_test(NAME io_cli_tokenize_count TIMEOUT 60 COMMAND ${QZ_EXPECT} 0
  "^815069$" -- ${M} -q tokenize --count --model ${QZ_MODELS}/stories260K-hf
  --text ${MPIQUANT_SHARED_DIR}/data/wikitext2_raw_test_gptq_joined.txt)
# The eval windows written by the CLI equal the golden files byte for byte.
foreach(pair "stories260K-hf;stories260K;512" "babyllama-tok105-hf;babyllama;256")
  list(GET pair 0 dir)
  list(GET pair 1 tag)
  list(GET pair 2 win)
  foreach(text "tinystories;tinystories_valid_head" "wikitext;wikitext2_raw_test_gptq_joined")
    list(GET text 0 short)
    list(GET text 1 file)
    qz_add_test(NAME io_cli_tokenize_golden_${tag}_${short} TIMEOUT 60 COMMAND sh -c
      "mkdir -p \"$QZ_TEST_TMP\" && \"$0\" -q tokenize --model \"$1\" --text \"$2\" --window $3 --out \"$QZ_TEST_TMP/w.txt\" && n=$(wc -l < \"$4\") && head -n $n \"$QZ_TEST_TMP/w.txt\" | cmp - \"$4\" && echo identical"
      ${M} ${QZ_MODELS}/${dir} ${MPIQUANT_SHARED_DIR}/data/${file}.txt ${win}
      ${MPIQUANT_SHARED_DIR}/golden/calib/${tag}_eval_${short}_ids.txt)
  endforeach()
endforeach()
# Same status on every rank, output once.
foreach(np 2 3 4)
  qz_add_test(NAME io_cli_inspect_np${np} TIMEOUT 60 COMMAND ${QZ_EXPECT} 0
    "47 tensors, 260,032 parameters"
    -- ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${M} inspect ${QZ_MODELS}/stories260K-hf)
  qz_add_test(NAME io_cli_inspect_missing_np${np} TIMEOUT 60 COMMAND ${QZ_EXPECT} 4
    "error \\[rank 0\\] \\(QZ_ERR_IO\\)"
    -- ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${M} inspect /nonexistent/model)
  set_tests_properties(io_cli_inspect_np${np} io_cli_inspect_missing_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_test_program(qzt_io_badinput unit/test_io_badinput.c)
qz_add_test(NAME io_badinput COMMAND qzt_io_badinput TIMEOUT 60 LABELS io)

# libFuzzer targets (clang only): cmake -B build-fuzz -DCMAKE_C_COMPILER=clang
# -DMPIQUANT_FUZZ=ON. The io sources are compiled a second time with coverage
# and ASan/UBSan for the fuzzers only, so the rest of the build is unchanged.
# The short runs below are tests of the fuzz build; docs/io.md has the long
# command.
if(MPIQUANT_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MPIQUANT_FUZZ=ON needs clang (libFuzzer): configure "
      "with -DCMAKE_C_COMPILER=clang")
  endif()
  set(QZ_FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined
      -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  file(GLOB QZ_FUZZ_LIB_SRC ${PROJECT_SOURCE_DIR}/core/*.c)
  list(APPEND QZ_FUZZ_LIB_SRC ${PROJECT_SOURCE_DIR}/io/safetensors.c
       ${PROJECT_SOURCE_DIR}/io/export_gptq_read.c ${PROJECT_SOURCE_DIR}/io/export_ct_read.c
       ${PROJECT_SOURCE_DIR}/io/fp8_read.c
       ${PROJECT_SOURCE_DIR}/io/files.c
       ${PROJECT_SOURCE_DIR}/io/config.c ${PROJECT_SOURCE_DIR}/io/tokenizer.c
       ${PROJECT_SOURCE_DIR}/io/unicode_norm.c
       ${PROJECT_SOURCE_DIR}/io/tokens.c ${PROJECT_SOURCE_DIR}/io/ckpt.c
       ${PROJECT_SOURCE_DIR}/io/fingerprint.c ${PROJECT_SOURCE_DIR}/io/h5zstd.c)
  add_library(qz_io_fuzzlib STATIC ${QZ_FUZZ_LIB_SRC})
  target_include_directories(qz_io_fuzzlib PUBLIC ${PROJECT_SOURCE_DIR}/include)
  target_compile_options(qz_io_fuzzlib PRIVATE ${QZ_FUZZ_FLAGS})
  target_link_libraries(qz_io_fuzzlib PUBLIC PkgConfig::JANSSON PkgConfig::H5
                        PkgConfig::ZSTD MPI::MPI_C m)
  foreach(f safetensors tokenizer manifest)
    add_executable(fuzz_${f} fuzz/fuzz_${f}.c)
    target_compile_options(fuzz_${f} PRIVATE ${QZ_FUZZ_FLAGS})
    target_link_options(fuzz_${f} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_${f} PRIVATE qz_io_fuzzlib)
    set_target_properties(fuzz_${f} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                          ${CMAKE_BINARY_DIR}/fuzz)
    # Open MPI's allocations at MPI_Init (fuzz_manifest) would drown the
    # leak report, as in the sanitizer run
    set(_leaks "")
    set(_env "")
    if(f STREQUAL "manifest")
      set(_leaks "-detect_leaks=0")
      set(_env "ASAN_OPTIONS=detect_leaks=0")
    endif()
    # new inputs go to the scratch corpus (first dir), seeds stay read-only
    qz_add_test(NAME fuzz_${f}_short TIMEOUT 600 LABELS fuzz COMMAND sh -c
      "mkdir -p \"$QZ_TEST_TMP/corpus\" && ${_env} exec \"$0\" -runs=2000 -seed=1 -max_len=8192 ${_leaks} -artifact_prefix=\"$QZ_TEST_TMP/\" \"$QZ_TEST_TMP/corpus\" \"$1\""
      $<TARGET_FILE:fuzz_${f}> ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${f})
  endforeach()
endif()

qz_test_program(qzt_io_rows mpi/test_io_rows.c)
qz_add_mpi_test(NAME io_rows COMMAND $<TARGET_FILE:qzt_io_rows> TIMEOUT 120 LABELS io)

# FP8 E4M3/E5M2 codec: self-consistency, then every code and a dense sweep
# of values (ties, saturation, specials) against tests/fp8_check.py, a numpy
# encoder/decoder written from the OCP 8-bit floating point spec
qz_test_program(qzt_fp8 unit/test_fp8.c)
qz_add_test(NAME fp8_codec COMMAND qzt_fp8 TIMEOUT 60 LABELS io)
qz_add_test(NAME fp8_spec TIMEOUT 60 LABELS io
  COMMAND sh -c "$<TARGET_FILE:qzt_fp8> >/dev/null && /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/fp8_check.py \"$QZ_TEST_TMP/fp8.bin\"")

# NFC/NFD against Unicode's NormalizationTest.txt (package unicode-data, the
# same UCD version the tables in io/unicode_tables.h are generated from)
qz_test_program(qzt_unicode_norm unit/test_unicode_norm.c)
qz_add_test(NAME io_unicode_norm TIMEOUT 120 LABELS io COMMAND
  sh ${CMAKE_CURRENT_SOURCE_DIR}/unicode_norm.sh $<TARGET_FILE:qzt_unicode_norm>)
set_tests_properties(io_unicode_norm PROPERTIES SKIP_RETURN_CODE 77)

# mpiquant tokenize vs Hugging Face's tokenizers (Rust crate via Node, and
# tokenizers.js) id for id: NFC/NFD, added-token flags, Unicode stress text,
# the shared texts (docs/io.md). Skips without node or tests/js/node_modules.
qz_add_test(NAME tokenizer_hf TIMEOUT 300 LABELS io COMMAND
  sh ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_hf.sh)
set_tests_properties(tokenizer_hf PROPERTIES SKIP_RETURN_CODE 77)
# The same fixtures without node: ids the Rust reference wrote once
# (tests/fixtures/tokenizers/hf_golden_ids.json)
qz_test_program(qzt_tokenizer_hf_golden unit/test_tokenizer_hf_golden.c)
qz_add_test(NAME io_tokenizer_hf_golden COMMAND qzt_tokenizer_hf_golden TIMEOUT 60 LABELS io)

# FP8 models as other tools ship them (tests/fp8_models.py, from the OCP
# spec): eval equals the numpy-dequantized f32 model, quantize --model works
foreach(np 1 3)
  qz_add_test(NAME fp8_read_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fp8_read.sh ${np})
  set_tests_properties(fp8_read_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# FP8 activation quantizers (dynamic per token / per token-group, static)
# bit for bit against tests/fp8_ref.py's numpy quantizers
qz_test_program(qzt_fp8_act unit/test_fp8_act.c)
qz_add_test(NAME fp8_act_spec TIMEOUT 60 LABELS io
  COMMAND sh -c "$<TARGET_FILE:qzt_fp8_act> >/dev/null && /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/fp8_ref.py --act-bin \"$QZ_TEST_TMP/fp8_act.bin\"")

# eval of each FP8 (float-quantized) export equals eval --ckpt
foreach(np 1 3)
  qz_add_test(NAME fp8_export_read_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fp8_export_read.sh ${np})
  set_tests_properties(fp8_export_read_np${np} PROPERTIES PROCESSORS ${np})
endforeach()

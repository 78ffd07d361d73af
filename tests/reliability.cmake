# Reliability (issue: checkpoints you can trust, inputs that cannot hang or
# destroy anything). Each test names the failure it guards against.

# GPTQ with np > nsamples: ranks without windows contribute zero to H.
# Every p = 1..8 against nsamples 1..8 in one launch at np 8.
qz_test_program(qzt_hessian_empty_ranks mpi/test_hessian_empty_ranks.c)
qz_add_mpi_test(NAME hessian_empty_ranks COMMAND $<TARGET_FILE:qzt_hessian_empty_ranks>
  NPS 8 TIMEOUT 120)

# FIFOs, devices, directories and symlink loops as every input path: a clear
# error, exit 4, never a hang.
# np 1 also runs in the sanitizer build (scripts/test.sh --sanitize); the
# multi-rank variants and the kill loop are labelled e2e to keep that run short.
qz_add_test(NAME reliability_fifo_np1 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_fifo.sh 1)
qz_add_test(NAME reliability_fifo_np2 TIMEOUT 300 LABELS e2e
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_fifo.sh 2)
set_tests_properties(reliability_fifo_np2 PROPERTIES PROCESSORS 2)

# Damaged manifests (wrong version, 2^62 blocks, duplicates, FIFO): clear
# errors; label unit, so scripts/test.sh --sanitize runs it under ASan.
qz_test_program(qzt_ckpt_manifest unit/test_ckpt_manifest.c)
qz_add_test(NAME ckpt_manifest COMMAND qzt_ckpt_manifest TIMEOUT 60 LABELS io)

# export --out: never an input, never a mix of two exports, nothing left
# behind by a failure; another model refused by export and resume; NaN
# weights and out-of-vocabulary token ids named.
qz_add_test(NAME reliability_model TIMEOUT 120
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_model.sh)

# Source fingerprint: content digest, the same at np 1..4.
qz_test_program(qzt_source_fingerprint mpi/test_source_fingerprint.c)
qz_add_mpi_test(NAME source_fingerprint COMMAND $<TARGET_FILE:qzt_source_fingerprint>
  TIMEOUT 120 LABELS io)

# SIGKILL at checkpoint write steps (15 drawn + the 5 steps of the last
# snapshot write at np 1; at np 2 one drawn step, the collective snapshot
# write and the manifest update after it), then --resume: the same directory as an
# uninterrupted run, no temporary left.
qz_add_test(NAME reliability_kill_np1 TIMEOUT 300 LABELS e2e
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_kill.sh 1 15)
qz_add_test(NAME reliability_kill_np2 TIMEOUT 300 LABELS e2e
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_kill.sh 2 1)
set_tests_properties(reliability_kill_np2 PROPERTIES PROCESSORS 2)

# One flipped bit in a zstd chunk: verify, eval --ckpt and export name the
# dataset (exit 5); --resume rewrites it, and deleted/truncated block files,
# identically.
qz_add_test(NAME reliability_corrupt_np1 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_corrupt.sh 1)
qz_add_test(NAME reliability_corrupt_np2 TIMEOUT 300 LABELS e2e
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/reliability_corrupt.sh 2)
set_tests_properties(reliability_corrupt_np2 PROPERTIES PROCESSORS 2)

# Hostile tokenizer.json: sparse huge id, 100,000 added tokens, a Replace to
# 64 KB (limits in mpiquant/tokenizer.h, docs/io.md).
qz_test_program(qzt_tokenizer_limits unit/test_tokenizer_limits.c)
qz_add_test(NAME tokenizer_limits COMMAND qzt_tokenizer_limits TIMEOUT 60 LABELS io)

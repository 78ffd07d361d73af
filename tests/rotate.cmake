# Rotations (issue 19): invariance of the fused/online rotations (unit, random
# weights with massive activations), a rotated unquantized checkpoint against
# the unrotated model (both tiny models and a synthetic massive-activation
# model), W4A4KV4 GPTQ with Hadamard rotations identical at np 1-4.
qz_test_program(qzt_rotate unit/test_rotate.c)
qz_add_test(NAME rotate_fuse COMMAND qzt_rotate TIMEOUT 60)
set(ROTINV ${CMAKE_CURRENT_SOURCE_DIR}/rotate_invariance.sh)
foreach(model stories babyllama synth)
  qz_add_test(NAME rotate_invariance_${model}_np2 TIMEOUT 120 COMMAND ${ROTINV} 2 ${model})
  set_tests_properties(rotate_invariance_${model}_np2 PROPERTIES PROCESSORS 2)
endforeach()
qz_add_test(NAME rotate_invariance_stories_np3 TIMEOUT 120 COMMAND ${ROTINV} 3 stories)
set_tests_properties(rotate_invariance_stories_np3 PROPERTIES PROCESSORS 3)
# W4A4KV4 GPTQ on Hadamard-rotated weights: the same checkpoint at np 1-4
# (the Hessian of down_proj is the one of its rotated input)
qz_add_test(NAME np_identity_gptq_rotate TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/np_identity.sh
  gptq --bits 4 --group -1 --act-bits 4 --act-asym --kv-bits 4 --rotate hadamard --rotate-seed 1
  --w-clip --act-order)
set_tests_properties(np_identity_gptq_rotate PROPERTIES PROCESSORS 4)
foreach(model stories synth)
  qz_add_test(NAME rotate_invariance_duquant_${model}_np2 TIMEOUT 120 COMMAND ${ROTINV} 2 ${model} duquant)
  set_tests_properties(rotate_invariance_duquant_${model}_np2 PROPERTIES PROCESSORS 2)
endforeach()
# DuQuant's statistics, sample, rotations and zigzag permutation against an
# independent numpy implementation of the paper's algorithm
foreach(np 1 3)
  qz_add_test(NAME duquant_ref_np${np} TIMEOUT 120 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/duquant_ref.sh ${np})
  set_tests_properties(duquant_ref_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_add_test(NAME np_identity_gptq_duquant TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/np_identity.sh
  gptq --bits 4 --group -1 --act-bits 4 --kv-bits 4 --rotate duquant --block 16)
set_tests_properties(np_identity_gptq_duquant PROPERTIES PROCESSORS 4)
# model level: rotations recover W4A4 perplexity
qz_add_test(NAME rotate_w4a4_stories_np2 TIMEOUT 120 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/rotate_w4a4.sh 2)
set_tests_properties(rotate_w4a4_stories_np2 PROPERTIES PROCESSORS 2)
# SIGKILL in block 3 + --resume: identical to an uninterrupted run
foreach(rot hadamard duquant)
  qz_add_test(NAME rotate_resume_${rot}_np2 TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/rotate_resume.sh 2 ${rot})
  set_tests_properties(rotate_resume_${rot}_np2 PROPERTIES PROCESSORS 2 LABELS "e2e")
endforeach()
# usage errors name the option
set(M $<TARGET_FILE:mpiquant>)
set(SM ${MPIQUANT_SHARED_DIR}/models/stories260K-hf)
qz_add_test(NAME rotate_usage_kind COMMAND ${QZ_EXPECT} 2 "--rotate 'quarot': one of none, hadamard, duquant"
  -- ${M} quantize --model ${SM} --out x --method rtn --rotate quarot)
qz_add_test(NAME rotate_usage_asym COMMAND ${QZ_EXPECT} 2 "--act-asym, --act-clip and --act-groups shape the activation quantizer of --act-bits"
  -- ${M} quantize --model ${SM} --out x --method rtn --act-asym)
qz_add_test(NAME rotate_usage_block COMMAND ${QZ_EXPECT} 2 "--block, --perm and --smooth are options of --rotate duquant"
  -- ${M} quantize --model ${SM} --out x --method rtn --rotate hadamard --block 64)
qz_add_test(NAME rotate_usage_awq COMMAND ${QZ_EXPECT} 2 "a method that folds scales into the norms"
  -- ${M} quantize --model ${SM} --out x --method awq --rotate hadamard)
qz_add_test(NAME rotate_usage_none_bits COMMAND ${QZ_EXPECT} 2 "--method none keeps the weights exactly"
  -- ${M} quantize --model ${SM} --out x --method none --bits 4)
# a rotated checkpoint is not exported as if its weights were the model
add_test(NAME rotate_export_refused COMMAND sh -c
  "rm -rf \"$QZ_TEST_TMP\" && mkdir -p \"$QZ_TEST_TMP\" && \"$MPIQUANT_BIN\" quantize --model \"$QZ_SHARED_DIR/models/stories260K-hf\" --method rtn --bits 4 --group 32 --rotate hadamard --out \"$QZ_TEST_TMP/ck\" -q && \"$QZ_EXPECT\" 11 'was made with --rotate hadamard' 'no export format' -- \"$MPIQUANT_BIN\" export --ckpt \"$QZ_TEST_TMP/ck\" --format gptq --out \"$QZ_TEST_TMP/ex\" && test ! -e \"$QZ_TEST_TMP/ex\"")
set_tests_properties(rotate_export_refused PROPERTIES TIMEOUT 60 LABELS "unit"
  ENVIRONMENT "${QZ_TEST_ENV};QZ_EXPECT=${QZ_EXPECT};QZ_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp/rotate_export_refused")
# perplexity and task results of W4A4KV4 rotated checkpoints identical at np 1-3
foreach(rot hadamard duquant)
  qz_add_test(NAME rotate_eval_np_${rot} TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/rotate_eval_np.sh ${rot})
  set_tests_properties(rotate_eval_np_${rot} PROPERTIES PROCESSORS 3)
endforeach()
# an outlier-injected real model (synth --from): unrotated W4A4 collapses,
# Hadamard and DuQuant recover the gap to W4A16
qz_add_test(NAME rotate_outliers_np2 TIMEOUT 120 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/rotate_outliers.sh 2)
set_tests_properties(rotate_outliers_np2 PROPERTIES PROCESSORS 2)
# rotation options in a sweep variant: the point equals quantize + eval by hand
qz_add_test(NAME rotate_sweep_np2 TIMEOUT 120 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/rotate_sweep.sh)
set_tests_properties(rotate_sweep_np2 PROPERTIES PROCESSORS 2 LABELS "unit;sweep")
# synth --from usage errors name the option
qz_add_test(NAME synth_outliers_usage_channels COMMAND ${QZ_EXPECT} 2 "--outlier-channels 40 must be at most half"
  -- ${M} synth --from ${SM} --out x --outlier-channels 40)
qz_add_test(NAME synth_outliers_usage_from COMMAND ${QZ_EXPECT} 2 "need --from MODEL_DIR"
  -- ${M} synth --config x.json --layers 2 --out x --outlier-scale 4)
qz_add_test(NAME synth_outliers_usage_sites COMMAND ${QZ_EXPECT} 2 "--outlier-sites 'norm,foo': a comma list"
  -- ${M} synth --from ${SM} --out x --outlier-sites norm,foo)
qz_add_test(NAME rotate_usage_kv_clip COMMAND ${QZ_EXPECT} 2 "--kv-clip shapes the KV-cache quantizer of --kv-bits"
  -- ${M} quantize --model ${SM} --out x --method rtn --kv-clip 0.9)

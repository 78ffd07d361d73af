# Outlier-aware methods (issue 18). LLM.int8(): calibration outlier columns,
# int8 weights and the W8A8 decomposition's perplexity against numpy
# written from the paper (tests/llm_int8_ref.py); the weight-only variant's
# sparse fp16 columns; the same checkpoint at np 1-4; option errors.
set(LI ${CMAKE_CURRENT_SOURCE_DIR}/llm_int8.sh)
qz_add_test(NAME llm_int8_ref_t6_np2 TIMEOUT 300 COMMAND ${LI} 2 6)
qz_add_test(NAME llm_int8_ref_t3_np3 TIMEOUT 300 COMMAND ${LI} 3 3)
qz_add_test(NAME llm_int8_weight_only_np4 TIMEOUT 300 COMMAND ${LI} 4 4 --weight-only)
# one quantized block (the others fp): numpy and mpiquant agree to ~1e-5, so
# the hook's parts are each visible (tests/llm_int8_ref.py, PPL_REL_1); with
# one calibration window most eval outlier columns are found dynamically
qz_add_test(NAME llm_int8_block4_t6_np2 TIMEOUT 300 COMMAND ${LI} 2 6 --layers 4:5)
qz_add_test(NAME llm_int8_block4_dynamic_np3 TIMEOUT 300 COMMAND ${LI} 3 6 --layers 4:5
  ENV LI_NSAMPLES=1)
set_tests_properties(llm_int8_ref_t3_np3 llm_int8_block4_dynamic_np3 PROPERTIES PROCESSORS 3)
set_tests_properties(llm_int8_block4_t6_np2 PROPERTIES PROCESSORS 2)
set_tests_properties(llm_int8_weight_only_np4 PROPERTIES PROCESSORS 4)

set(NPID ${CMAKE_CURRENT_SOURCE_DIR}/np_identity.sh)
qz_add_test(NAME np_identity_llm_int8 TIMEOUT 300 COMMAND ${NPID} llm-int8 --threshold 3)
qz_add_test(NAME np_identity_llm_int8_wo TIMEOUT 300
  COMMAND ${NPID} llm-int8 --threshold 3 --weight-only)
set_tests_properties(np_identity_llm_int8 np_identity_llm_int8_wo PROPERTIES PROCESSORS 4)

qz_add_test(NAME llm_int8_opt_bits COMMAND ${QZ_EXPECT} 2
  "--method llm-int8 quantizes weights to int8 per output row"
  -- $<TARGET_FILE:mpiquant> quantize --model ${MPIQUANT_SHARED_DIR}/models/stories260K-hf
  --calib-tokens x.txt --method llm-int8 --bits 4 --out ${CMAKE_BINARY_DIR}/test-tmp/li_opt)
qz_add_test(NAME llm_int8_opt_threshold COMMAND ${QZ_EXPECT} 2 "--threshold must be > 0"
  -- $<TARGET_FILE:mpiquant> quantize --model ${MPIQUANT_SHARED_DIR}/models/stories260K-hf
  --calib-tokens x.txt --method llm-int8 --threshold 0 --out ${CMAKE_BINARY_DIR}/test-tmp/li_opt)

set(OSW ${CMAKE_CURRENT_SOURCE_DIR}/outlier_sweep.sh)
qz_add_test(NAME llm_int8_sweep_np2 TIMEOUT 300 COMMAND ${OSW} llm-int8 8 -1)
qz_add_test(NAME spqr_sweep_np2 TIMEOUT 300 COMMAND ${OSW} spqr 3 16)
set_tests_properties(llm_int8_sweep_np2 spqr_sweep_np2 PROPERTIES PROCESSORS 2)

# SpQR: layer results on golden cases vs numpy from the paper
# (tests/spqr_ref.py): dead columns, odd shapes, a rank-deficient Hessian,
# 2 bits, no outliers; np 1..4 (halo rows of the second-level groups)
set(SPL ${CMAKE_CURRENT_SOURCE_DIR}/spqr_layer.sh)
qz_add_test(NAME spqr_layer_a_np1 TIMEOUT 120 COMMAND ${SPL} 1 gptq_a_w4_g128_asym 3 16 0.2)
qz_add_test(NAME spqr_layer_g_dead_np2 TIMEOUT 120 COMMAND ${SPL} 2 gptq_g_w4_g128_asym_dead 3 16 0.2 loo act)
qz_add_test(NAME spqr_layer_i_odd_np3 TIMEOUT 120 COMMAND ${SPL} 3 gptq_i_w4_g64_asym_odd 3 16 0.3 loo act)
qz_add_test(NAME spqr_layer_h_rankdef_np4 TIMEOUT 120 COMMAND ${SPL} 4 gptq_h_w4_g128_asym_rankdef 3 16 4 obs)
qz_add_test(NAME spqr_layer_e_w2_np4 TIMEOUT 120 COMMAND ${SPL} 4 gptq_e_w2_g64_asym 2 32 6 obs)
qz_add_test(NAME spqr_layer_a_noout_np2 TIMEOUT 120 COMMAND ${SPL} 2 gptq_a_w4_g128_asym 4 16 0)
set_tests_properties(spqr_layer_g_dead_np2 spqr_layer_a_noout_np2 PROPERTIES PROCESSORS 2)
set_tests_properties(spqr_layer_i_odd_np3 PROPERTIES PROCESSORS 3)
set_tests_properties(spqr_layer_h_rankdef_np4 spqr_layer_e_w2_np4 PROPERTIES PROCESSORS 4)
qz_add_test(NAME np_identity_spqr TIMEOUT 300 COMMAND ${NPID} spqr --bits 3 --group 16 --act-order)
set_tests_properties(np_identity_spqr PROPERTIES PROCESSORS 4)
qz_add_test(NAME spqr_opt_sym COMMAND ${QZ_EXPECT} 2 "asymmetric groups fitted during the sweep"
  -- $<TARGET_FILE:mpiquant> quantize --model ${MPIQUANT_SHARED_DIR}/models/stories260K-hf
  --calib-tokens x.txt --method spqr --sym --out ${CMAKE_BINARY_DIR}/test-tmp/sp_opt)
qz_add_test(NAME spqr_opt_group COMMAND ${QZ_EXPECT} 2 "must divide --blocksize"
  -- $<TARGET_FILE:mpiquant> quantize --model ${MPIQUANT_SHARED_DIR}/models/stories260K-hf
  --calib-tokens x.txt --method spqr --group 24 --out ${CMAKE_BINARY_DIR}/test-tmp/sp_opt)
qz_add_test(NAME spqr_opt_rule COMMAND ${QZ_EXPECT} 2 "--outlier-rule must be loo or obs"
  -- $<TARGET_FILE:mpiquant> quantize --model ${MPIQUANT_SHARED_DIR}/models/stories260K-hf
  --calib-tokens x.txt --method spqr --outlier-rule foo --out ${CMAKE_BINARY_DIR}/test-tmp/sp_opt)
qz_add_test(NAME spqr_model_stories_np2 TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/spqr_model.sh 2)
set_tests_properties(spqr_model_stories_np2 PROPERTIES PROCESSORS 2)

# crash in block 3 and --resume: identical to an uninterrupted run
set(ORS ${CMAKE_CURRENT_SOURCE_DIR}/outlier_resume.sh)
qz_add_test(NAME llm_int8_resume_np2 TIMEOUT 300 COMMAND ${ORS} 2 llm-int8 --threshold 3)
qz_add_test(NAME spqr_resume_np3 TIMEOUT 300 COMMAND ${ORS} 3 spqr --bits 3 --group 16)
set_tests_properties(llm_int8_resume_np2 PROPERTIES PROCESSORS 2)
set_tests_properties(spqr_resume_np3 PROPERTIES PROCESSORS 3)

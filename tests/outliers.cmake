# Outlier-aware methods (issue 18). LLM.int8(): calibration outlier columns,
# int8 weights and the W8A8 decomposition's perplexity against numpy
# written from the paper (tests/llm_int8_ref.py); the weight-only variant's
# sparse fp16 columns; the same checkpoint at np 1-4; option errors.
set(LI ${CMAKE_CURRENT_SOURCE_DIR}/llm_int8.sh)
qz_add_test(NAME llm_int8_ref_t6_np2 TIMEOUT 300 COMMAND ${LI} 2 6)
qz_add_test(NAME llm_int8_ref_t3_np3 TIMEOUT 300 COMMAND ${LI} 3 3)
qz_add_test(NAME llm_int8_weight_only_np4 TIMEOUT 300 COMMAND ${LI} 4 4 --weight-only)
set_tests_properties(llm_int8_ref_t3_np3 PROPERTIES PROCESSORS 3)
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

qz_add_test(NAME llm_int8_sweep_np2 TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/llm_int8_sweep.sh)
set_tests_properties(llm_int8_sweep_np2 PROPERTIES PROCESSORS 2)

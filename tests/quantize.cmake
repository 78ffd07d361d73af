# quantize pipeline end to end against the model-level reference table of
# ../shared/golden/README.md (tolerances: its "Recommended tolerances").
set(E2E ${CMAKE_CURRENT_SOURCE_DIR}/quantize_e2e.sh)
foreach(np 1 2 3 4)
  qz_add_test(NAME quantize_gptq_w4g32_stories_np${np} TIMEOUT 300
    COMMAND ${E2E} ${np} stories 4.0237 0.005 149.49 0.005 -- --method gptq --bits 4 --group 32)
  # REPEAT=1: a second run at the same np must give an h5diff-identical checkpoint
  set_tests_properties(quantize_gptq_w4g32_stories_np${np} PROPERTIES PROCESSORS ${np} LABELS "e2e"
    ENVIRONMENT "${QZ_TEST_ENV};QZ_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp/quantize_gptq_w4g32_stories_np${np};REPEAT=1")
endforeach()
foreach(np 1 3)
  qz_add_test(NAME quantize_rtn_w4g32_stories_np${np} TIMEOUT 200
    COMMAND ${E2E} ${np} stories 4.1707 0.001 149.00 0.001 -- --method rtn --bits 4 --group 32)
endforeach()
qz_add_test(NAME quantize_gptq_w4g32_act_stories_np2 TIMEOUT 300
  COMMAND ${E2E} 2 stories 3.9777 0.005 141.91 0.005 -- --method gptq --bits 4 --group 32 --act-order)
qz_add_test(NAME quantize_gptq_w3g32_stories_np4 TIMEOUT 300
  COMMAND ${E2E} 4 stories 5.1521 0.005 164.66 0.005 -- --method gptq --bits 3 --group 32)
foreach(np 1 4)
  qz_add_test(NAME quantize_gptq_w4g32_babyllama_np${np} TIMEOUT 300
    COMMAND ${E2E} ${np} babyllama 2.2598 0.01 29.085 0.02 -- --method gptq --bits 4 --group 32)
endforeach()
qz_add_test(NAME quantize_gptq_w4g32_act_babyllama_np2 TIMEOUT 300
  COMMAND ${E2E} 2 babyllama 2.2547 0.01 29.391 0.02 -- --method gptq --bits 4 --group 32 --act-order)
qz_add_test(NAME quantize_rtn_w4g32_babyllama_np2 TIMEOUT 200
  COMMAND ${E2E} 2 babyllama 2.3053 0.001 29.197 0.001 -- --method rtn --bits 4 --group 32)

# SIGKILL of one rank in block 3, then --resume: identical to an
# uninterrupted run (h5diff); resume with other options / truncated
# manifest / unwritable --out fail clearly.
qz_add_test(NAME quantize_kill_resume_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/quantize_resume.sh 2 2)
qz_add_test(NAME quantize_kill_resume_np3 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/quantize_resume.sh 3 1)

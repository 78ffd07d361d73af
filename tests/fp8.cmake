# --method fp8 (docs/methods.md "FP8"): checkpoints against tests/fp8_ref.py
# (codes and scales exact, static input scales, eval --ckpt perplexity vs a
# numpy fake-quant forward with named tolerances in tests/fp8_e2e.sh), one
# scheme per test at different np.
set(FP8E2E ${CMAKE_CURRENT_SOURCE_DIR}/fp8_e2e.sh)
qz_add_test(NAME fp8_dynamic_stories_np2 TIMEOUT 300 COMMAND ${FP8E2E} 2 stories --)
qz_add_test(NAME fp8_static_stories_np3 TIMEOUT 300
  COMMAND ${FP8E2E} 3 stories -- --act static)
qz_add_test(NAME fp8_none_stories_np1 TIMEOUT 300 COMMAND ${FP8E2E} 1 stories -- --act none)
qz_add_test(NAME fp8_block128_stories_np4 TIMEOUT 300
  COMMAND ${FP8E2E} 4 stories -- --weight-block 128)
qz_add_test(NAME fp8_block32_stories_np3 TIMEOUT 300
  COMMAND ${FP8E2E} 3 stories -- --weight-block 32)
qz_add_test(NAME fp8_dynamic_babyllama_np2 TIMEOUT 300 COMMAND ${FP8E2E} 2 babyllama --)
foreach(t dynamic_stories_np2 static_stories_np3 none_stories_np1 block128_stories_np4
          block32_stories_np3 dynamic_babyllama_np2)
  string(REGEX MATCH "np([0-9])" _np ${t})
  set_tests_properties(fp8_${t} PROPERTIES PROCESSORS ${CMAKE_MATCH_1} LABELS "e2e")
endforeach()
# Usage errors name the conflicting options (exit 2 on every rank).
set(M $<TARGET_FILE:mpiquant>)
set(SM ${MPIQUANT_SHARED_DIR}/models/stories260K-hf)
qz_add_test(NAME fp8_usage_block_static COMMAND ${QZ_EXPECT} 2 "block weights go with dynamic"
  -- ${M} quantize --model ${SM} --method fp8 --weight-block 128 --act static --out x)
qz_add_test(NAME fp8_usage_bits COMMAND ${QZ_EXPECT} 2 "no --bits other than 8"
  -- ${M} quantize --model ${SM} --method fp8 --bits 4 --out x)
qz_add_test(NAME fp8_usage_static_calib COMMAND ${QZ_EXPECT} 2 "needs calibration data"
  -- ${M} quantize --model ${SM} --method fp8 --act static --out x)
qz_add_test(NAME fp8_usage_act COMMAND ${QZ_EXPECT} 2 "--act must be dynamic, static or none"
  -- ${M} quantize --model ${SM} --method fp8 --act fp16 --out x)
# FP8 checkpoints -> compressed-tensors float-quantized, decoded exactly by an
# independent numpy reader (tests/export_ct_fp8_check.py)
foreach(np 1 3)
  qz_add_test(NAME export_ct_fp8_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_ct_fp8.sh ${np})
  set_tests_properties(export_ct_fp8_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# layer (np 1, 3; per channel and 32x32 blocks) vs numpy; a sweep row equals
# quantize + eval (tests/fp8_layer_sweep.sh)
qz_add_test(NAME fp8_layer_sweep TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fp8_layer_sweep.sh)
set_tests_properties(fp8_layer_sweep PROPERTIES PROCESSORS 3 LABELS "unit;sweep")
# static scales survive a kill + --resume bit for bit (tests/fp8_resume.sh)
qz_add_test(NAME fp8_static_kill_resume_np2 TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fp8_resume.sh)
set_tests_properties(fp8_static_kill_resume_np2 PROPERTIES PROCESSORS 2 LABELS "e2e")
qz_add_test(NAME fp8_usage_block_small COMMAND ${QZ_EXPECT} 2 "blocks of at least 16 x 16"
  -- ${M} quantize --model ${SM} --method fp8 --weight-block 4 --out x)

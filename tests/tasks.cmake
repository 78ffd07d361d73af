# eval --task: benchmark accuracy with lm-evaluation-harness 0.4 request
# semantics on the shared task files (../shared/tasks) and the fixtures in
# tests/fixtures/tasks. See tests/task_eval.sh (modes) and tests/task_check.py
# (the independent numpy forward + tokenizer and its tolerances).
set(QZ_TASK_SH ${CMAKE_CURRENT_SOURCE_DIR}/task_eval.sh)
foreach(np 1 2 3 4)
  # np N vs np 1 bit for bit (np 1: prefix reuse vs none within tolerance)
  qz_add_test(NAME task_eval_np${np} TIMEOUT 120 COMMAND ${QZ_TASK_SH} np ${np})
  set_tests_properties(task_eval_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# the vocab-sharded head (vocab > 4096): np N vs np 1, vs --full-head, vs numpy
foreach(np 2 4)
  qz_add_test(NAME task_vocabshard_np${np} TIMEOUT 120 COMMAND ${QZ_TASK_SH} vocabshard ${np})
  set_tests_properties(task_vocabshard_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_add_test(NAME task_badinput_np2 TIMEOUT 120 COMMAND ${QZ_TASK_SH} badinput 2)
set_tests_properties(task_badinput_np2 PROPERTIES PROCESSORS 2)
# per-request agreement with the numpy forward on both tiny models
qz_add_test(NAME task_check_stories_np2 TIMEOUT 240 LABELS e2e
  COMMAND ${QZ_TASK_SH} check stories260K-hf 10 2)
set_tests_properties(task_check_stories_np2 PROPERTIES PROCESSORS 2)
qz_add_test(NAME task_check_baby_np3 TIMEOUT 240 LABELS e2e
  COMMAND ${QZ_TASK_SH} check babyllama-tok105-hf 5 3)
set_tests_properties(task_check_baby_np3 PROPERTIES PROCESSORS 3)
qz_add_test(NAME task_fewshot_mmlu TIMEOUT 240 LABELS e2e COMMAND ${QZ_TASK_SH} fewshot)
set_tests_properties(task_fewshot_mmlu PROPERTIES PROCESSORS 2)
qz_add_test(NAME task_hf_layouts TIMEOUT 240 LABELS e2e COMMAND ${QZ_TASK_SH} layouts)
qz_add_test(NAME task_ckpt_np2 TIMEOUT 240 LABELS e2e COMMAND ${QZ_TASK_SH} ckpt 2)
set_tests_properties(task_ckpt_np2 PROPERTIES PROCESSORS 2)
qz_add_test(NAME task_help COMMAND ${QZ_EXPECT} 0 "--task NAME" "--num-fewshot K" "--log-samples FILE"
  -- $<TARGET_FILE:mpiquant> eval --help)

# New architectures (Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE) on tiny synthetic
# models: logits and routing vs an independent numpy forward (moe_ref.py),
# the task forward, np 1-4 identity, quantize + export (docs/moe.md).
qz_test_program(qzt_arch_dump mpi/test_arch_dump.c)
foreach(arch qwen3 mixtral qwen3-moe qwen2-moe)
  foreach(np 1 2 3 4)
    qz_add_test(NAME arch_fwd_${arch}_np${np} TIMEOUT 120
      COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/arch_fwd.sh
              ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs/${arch}-tiny.json ${np}
      ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
    set_tests_properties(arch_fwd_${arch}_np${np} PROPERTIES PROCESSORS ${np})
  endforeach()
endforeach()
# Qwen3 dense: GPTQ (np 1-4) and AWQ (np 1, 3); exports vs independent readers
set(QZ_ARCH_CFG ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs)
foreach(np 1 2 3 4)
  qz_add_test(NAME arch_quant_qwen3_gptq_np${np} TIMEOUT 180
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/arch_quant.sh ${QZ_ARCH_CFG}/qwen3-tiny.json ${np}
            --bits 4 --group 32 --act-order
    ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
  set_tests_properties(arch_quant_qwen3_gptq_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# dense Qwen3 with AWQ at np 1-4 (the MoE issue's "tiny Qwen3 ... with AWQ")
foreach(np 1 2 3 4)
  qz_add_test(NAME arch_quant_qwen3_awq_np${np} TIMEOUT 180
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/arch_quant.sh ${QZ_ARCH_CFG}/qwen3-tiny.json ${np}
            --method awq --bits 4 --group 32
    ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
  set_tests_properties(arch_quant_qwen3_awq_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# MoE quantize (tests/moe_quant.sh): np identity, per-expert token counts vs
# numpy routing, exports vs independent readers, starved experts with each
# fallback, kill + resume with an expert-streamed replay
set(QZ_MOEQ ${CMAKE_CURRENT_SOURCE_DIR}/moe_quant.sh)
foreach(case "mixtral;1" "mixtral;2" "mixtral;3" "mixtral;4" "qwen3-moe;1" "qwen3-moe;3"
        "qwen2-moe;1" "qwen2-moe;2")
  list(GET case 0 arch)
  list(GET case 1 np)
  qz_add_test(NAME moe_quant_${arch}_gptq_np${np} TIMEOUT 180
    COMMAND ${QZ_MOEQ} np ${QZ_ARCH_CFG}/${arch}-tiny.json ${np} --act-order
    ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
  set_tests_properties(moe_quant_${arch}_gptq_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
foreach(np 1 3)
  qz_add_test(NAME moe_quant_mixtral_rtn_np${np} TIMEOUT 180
    COMMAND ${QZ_MOEQ} np ${QZ_ARCH_CFG}/mixtral-tiny.json ${np} --method rtn
    ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
  set_tests_properties(moe_quant_mixtral_rtn_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
foreach(case "route-all;4" "pooled;2" "rtn;3")
  list(GET case 0 fb)
  list(GET case 1 np)
  qz_add_test(NAME moe_starve_${fb}_np${np} TIMEOUT 180
    COMMAND ${QZ_MOEQ} starve ${QZ_ARCH_CFG}/mixtral-tiny.json ${np} ${fb})
  set_tests_properties(moe_starve_${fb}_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_add_test(NAME moe_resume_np2 TIMEOUT 180
  COMMAND ${QZ_MOEQ} resume ${QZ_ARCH_CFG}/qwen3-moe-tiny.json 2)
set_tests_properties(moe_resume_np2 PROPERTIES PROCESSORS 2)
# plan vs the measured peak RSS of a Qwen3-MoE-shaped block at np 2 (10 %)
qz_add_test(NAME moe_plan_synth_np2 TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/moe_plan.sh)
set_tests_properties(moe_plan_synth_np2 PROPERTIES PROCESSORS 2)
qz_add_test(NAME moe_quant_mixtral_quantease_np2 TIMEOUT 180
  COMMAND ${QZ_MOEQ} np ${QZ_ARCH_CFG}/mixtral-tiny.json 2 --method quantease --iters 3)
set_tests_properties(moe_quant_mixtral_quantease_np2 PROPERTIES PROCESSORS 2)
# methods with a block hook but no expert hook refuse MoE models before
# writing anything (AWQ on MoE: tests/moe_awq.cmake)
qz_add_test(NAME moe_sq_refused TIMEOUT 60
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/moe_quant.sh refuse ${QZ_ARCH_CFG}/qwen3-moe-tiny.json 1 smoothquant
          --bits 8 --group -1)
qz_add_test(NAME moe_quant_empty_rank_np4 TIMEOUT 180
  COMMAND ${QZ_MOEQ} fewwin ${QZ_ARCH_CFG}/qwen2-moe-tiny.json 4)
set_tests_properties(moe_quant_empty_rank_np4 PROPERTIES PROCESSORS 4)

# AWQ on mixture-of-experts blocks (docs/moe.md, methods/awq.c
# qz_awq_expert): tiny synthetic Mixtral / Qwen3-MoE / Qwen2-MoE through
# tests/moe_quant.sh (np identity with np 1, fp routing counts vs numpy,
# GPTQ and compressed-tensors exports vs the independent readers), starved
# experts with each fallback, kill + resume, the per-expert search vs an
# independent numpy search (moe_awq_ref.py), and the refusal of
# --awq-then-gptq on MoE.
set(QZ_MOEQ ${CMAKE_CURRENT_SOURCE_DIR}/moe_quant.sh)
set(QZ_ARCH_CFG ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs)
foreach(case "mixtral;1" "mixtral;2" "mixtral;3" "mixtral;4" "qwen3-moe;1" "qwen3-moe;2"
        "qwen3-moe;3" "qwen3-moe;4" "qwen2-moe;1" "qwen2-moe;4")
  list(GET case 0 arch)
  list(GET case 1 np)
  qz_add_test(NAME moe_awq_${arch}_np${np} TIMEOUT 180
    COMMAND ${QZ_MOEQ} np ${QZ_ARCH_CFG}/${arch}-tiny.json ${np} --method awq
    ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
  set_tests_properties(moe_awq_${arch}_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
foreach(case "route-all;3" "pooled;2" "rtn;4")
  list(GET case 0 fb)
  list(GET case 1 np)
  qz_add_test(NAME moe_awq_starve_${fb}_np${np} TIMEOUT 180
    COMMAND ${QZ_MOEQ} starve ${QZ_ARCH_CFG}/mixtral-tiny.json ${np} ${fb} --method awq)
  set_tests_properties(moe_awq_starve_${fb}_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_add_test(NAME moe_awq_resume_np2 TIMEOUT 180
  COMMAND ${QZ_MOEQ} resume ${QZ_ARCH_CFG}/qwen2-moe-tiny.json 2 --method awq)
set_tests_properties(moe_awq_resume_np2 PROPERTIES PROCESSORS 2)
qz_add_test(NAME moe_awq_then_gptq_refused TIMEOUT 60
  COMMAND ${QZ_MOEQ} refuse ${QZ_ARCH_CFG}/mixtral-tiny.json 1 awq --awq-then-gptq)
# each expert's search (and, without clipping, its stored weights) vs numpy
foreach(case "mixtral;2;--no-clip" "qwen2-moe;3;--no-clip" "qwen3-moe;1;")
  list(GET case 0 arch)
  list(GET case 1 np)
  list(GET case 2 opt)
  qz_add_test(NAME moe_awq_ref_${arch}_np${np} TIMEOUT 120
    COMMAND ${QZ_MOEQ} awqref ${QZ_ARCH_CFG}/${arch}-tiny.json ${np} ${opt})
  set_tests_properties(moe_awq_ref_${arch}_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# perplexity of AWQ vs RTN on stories260K upcycled to a Mixtral
qz_add_test(NAME moe_awq_ppl_np2 TIMEOUT 180 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/moe_awq_ppl.sh 2)
set_tests_properties(moe_awq_ppl_np2 PROPERTIES PROCESSORS 2)
# 3 calibration windows at np 4: a rank without any token takes part in
# every expert's collectives
qz_add_test(NAME moe_awq_empty_rank_np4 TIMEOUT 180
  COMMAND ${QZ_MOEQ} fewwin ${QZ_ARCH_CFG}/qwen2-moe-tiny.json 4 --method awq)
set_tests_properties(moe_awq_empty_rank_np4 PROPERTIES PROCESSORS 4)
# the perplexity run is a whole pipeline on a real model (not under the
# sanitizers); the numpy comparisons are cheap and depend on BLAS rounding
set_property(TEST moe_awq_ppl_np2 APPEND PROPERTY LABELS e2e)
foreach(t moe_awq_ref_mixtral_np2 moe_awq_ref_qwen2-moe_np3 moe_awq_ref_qwen3-moe_np1)
  set_property(TEST ${t} APPEND PROPERTY LABELS numerics)
endforeach()

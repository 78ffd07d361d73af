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
foreach(np 1 3)
  qz_add_test(NAME arch_quant_qwen3_awq_np${np} TIMEOUT 180
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/arch_quant.sh ${QZ_ARCH_CFG}/qwen3-tiny.json ${np}
            --method awq --bits 4 --group 32
    ENV QZT_ARCH_DUMP=$<TARGET_FILE:qzt_arch_dump>)
  set_tests_properties(arch_quant_qwen3_awq_np${np} PROPERTIES PROCESSORS ${np})
endforeach()

# linalg + methods: distributed Hessian, factorization, RTN, GPTQ, layer.
qz_test_program(qzt_linalg_hessian mpi/test_linalg_hessian.c)
qz_add_mpi_test(NAME linalg_hessian COMMAND $<TARGET_FILE:qzt_linalg_hessian> TIMEOUT 120)

# Golden parity of `mpiquant layer` at np 1..4 (+ H from X), np > 1 identical to np 1.
qz_add_test(NAME linalg_golden_layer TIMEOUT 600
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/linalg_golden.sh 1 2 3 4)
set_tests_properties(linalg_golden_layer PROPERTIES PROCESSORS 4)
qz_test_program(qzt_gptq_synth mpi/test_gptq_synth.c)
qz_add_mpi_test(NAME gptq_synth COMMAND $<TARGET_FILE:qzt_gptq_synth> TIMEOUT 120)
qz_test_program(qzt_quant_rules unit/test_quant_rules.c)
qz_add_test(NAME quant_rules COMMAND qzt_quant_rules TIMEOUT 30)
qz_test_program(qzt_linalg_memory mpi/test_linalg_memory.c)
qz_add_mpi_test(NAME linalg_memory COMMAND $<TARGET_FILE:qzt_linalg_memory> NPS 4 TIMEOUT 300)

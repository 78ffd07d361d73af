# linalg + methods: distributed Hessian, factorization, RTN, GPTQ, layer.
qz_test_program(qzt_linalg_hessian mpi/test_linalg_hessian.c)
qz_add_mpi_test(NAME linalg_hessian COMMAND $<TARGET_FILE:qzt_linalg_hessian> TIMEOUT 120)
# the factor of a wide ill-conditioned H: np N == np 1 to the bit (1 x P grids)
qz_test_program(qzt_factor_grid mpi/test_factor_grid.c)
qz_add_mpi_test(NAME factor_grid COMMAND $<TARGET_FILE:qzt_factor_grid> TIMEOUT 120)
# two-level (node-local first) reduction == flat reduction, to the bit
qz_test_program(qzt_hessian_nodes mpi/test_hessian_nodes.c)
qz_add_mpi_test(NAME hessian_nodes COMMAND $<TARGET_FILE:qzt_hessian_nodes> TIMEOUT 120)

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

# mpiquant layer CLI: the damping ladder on a rank-deficient H with --damp 0
# (logged, recorded as damp_used), at np 1 and 3; usage errors.
foreach(np 1 3)
  qz_add_test(NAME layer_nonpd_ladder_np${np} TIMEOUT 120
    COMMAND ${QZ_EXPECT} 0
      "gptq_h_w4_g128_asym_rankdef.safetensors: Hessian not positive definite with percdamp 0"
      "retrying with percdamp 1e-06" "factored with percdamp"
      "damp_used=[0-9.e-]+"
      -- ${CMAKE_CURRENT_SOURCE_DIR}/linalg_ladder.sh ${np})
  set_tests_properties(layer_nonpd_ladder_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_add_test(NAME layer_usage_unknown_method COMMAND ${QZ_EXPECT} 2
  "unknown method 'awq2' \\(known: rtn, gptq[,)]"
  -- $<TARGET_FILE:mpiquant> layer --in x.safetensors --method awq2 --bits 4 --out y.safetensors)
qz_add_test(NAME layer_usage_missing COMMAND ${QZ_EXPECT} 2
  "--in, --out, --method and --bits are required"
  -- $<TARGET_FILE:mpiquant> layer --method gptq)
qz_add_test(NAME layer_help COMMAND ${QZ_EXPECT} 0 "usage: mpiquant layer" "--act-order" "--from-x"
  -- $<TARGET_FILE:mpiquant> layer --help)

# Hadamard matrices (H H^T = k I for every order built up to 400) and the
# rotation (K (x) H_2^m)/norm: orthogonal, fast path = dense product
qz_test_program(qzt_hadamard unit/test_hadamard.c)
qz_add_test(NAME hadamard COMMAND qzt_hadamard TIMEOUT 120)

# NF4 / FP4 codebooks: nearest value, ties, blockwise absmax; the NF4 table
# derived from its definition (N(0,1) quantiles) in tests/codebook_check.py
qz_test_program(qzt_codebook unit/test_codebook.c)
qz_add_test(NAME codebook COMMAND qzt_codebook TIMEOUT 60)
qz_add_test(NAME codebook_nf4_definition TIMEOUT 60
  COMMAND sh -c "$<TARGET_FILE:qzt_codebook> >/dev/null && /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/codebook_check.py \"$QZ_TEST_TMP/codebooks.txt\"")

# Scale: plan's memory formulas vs the real objects and the 1/P Hessian share
# (d = 28672, creation only); synth models through quantize/eval; plan vs a
# measured run; plan refusing a plan that does not fit.
qz_test_program(qzt_plan_memory mpi/test_plan_memory.c)
qz_add_mpi_test(NAME plan_memory COMMAND $<TARGET_FILE:qzt_plan_memory> NPS 1 2 3 4 TIMEOUT 300)
qz_add_test(NAME synth_quantize_eval_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scale_synth.sh)
qz_add_test(NAME plan_vs_run_np2 TIMEOUT 600
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scale_plan_synth.sh)
# --log-view's bytes per phase (MPI and file, mean over ranks) vs plan's byte
# model within 5 % at np 2 and np 4 (GPTQ w4 g128, 2-block synthetic model)
qz_add_test(NAME scale_bytes_np2_np4 TIMEOUT 120
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scale_bytes.sh)
# byte counting: attribution to phases, the row allgather's exact counts,
# and sent == received over ranks for the Hessian reduction and the factor
qz_test_program(qzt_bytes mpi/test_bytes.c)
qz_add_mpi_test(NAME bytes_count COMMAND $<TARGET_FILE:qzt_bytes> NPS 1 2 3 4 TIMEOUT 60)

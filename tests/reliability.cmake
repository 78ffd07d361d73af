# Reliability (issue: checkpoints you can trust, inputs that cannot hang or
# destroy anything). Each test names the failure it guards against.

# GPTQ with np > nsamples: ranks without windows contribute zero to H.
# Every p = 1..8 against nsamples 1..8 in one launch at np 8.
qz_test_program(qzt_hessian_empty_ranks mpi/test_hessian_empty_ranks.c)
qz_add_mpi_test(NAME hessian_empty_ranks COMMAND $<TARGET_FILE:qzt_hessian_empty_ranks>
  NPS 8 TIMEOUT 120)

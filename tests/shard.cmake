# shard: block forward, windows, collective model loading, eval.
qz_test_program(qzt_fwd_block unit/test_fwd_block.c)
qz_test_program(qzt_fwd_rope unit/test_fwd_rope.c)
qz_add_test(NAME fwd_block COMMAND qzt_fwd_block TIMEOUT 60)
qz_add_test(NAME fwd_rope COMMAND qzt_fwd_rope TIMEOUT 30)
qz_test_program(qzt_fwd_model mpi/test_fwd_model.c)
qz_add_mpi_test(NAME fwd_model COMMAND $<TARGET_FILE:qzt_fwd_model> TIMEOUT 300)

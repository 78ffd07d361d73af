# Checkpoint (io/ckpt.c): parallel HDF5 + manifest + resume rules.
qz_test_program(qzt_ckpt mpi/test_ckpt.c)
qz_add_mpi_test(NAME ckpt COMMAND $<TARGET_FILE:qzt_ckpt> TIMEOUT 120)
qz_test_program(qzt_assemble mpi/test_assemble.c)
qz_add_mpi_test(NAME assemble COMMAND $<TARGET_FILE:qzt_assemble> TIMEOUT 60)

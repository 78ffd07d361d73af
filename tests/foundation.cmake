# Foundation: error core, CLI, MPI harness, ScaLAPACK/HDF5/zstd plumbing.
qz_test_program(qzt_error unit/test_error.c)
qz_test_program(qzt_zstd unit/test_zstd.c)
qz_test_program(qzt_mpi_smoke mpi/test_mpi_smoke.c)
qz_test_program(qzt_scalapack_potrf mpi/test_scalapack_potrf.c)
qz_test_program(qzt_h5_roundtrip mpi/test_h5_roundtrip.c)

qz_add_test(NAME shared_data_present COMMAND test -f ${MPIQUANT_SHARED_DIR}/golden/README.md TIMEOUT 5)
qz_add_test(NAME error_core COMMAND qzt_error TIMEOUT 30)
qz_add_test(NAME zstd_roundtrip COMMAND qzt_zstd TIMEOUT 30)
qz_add_mpi_test(NAME mpi_smoke COMMAND $<TARGET_FILE:qzt_mpi_smoke> TIMEOUT 60)
qz_add_mpi_test(NAME scalapack_potrf COMMAND $<TARGET_FILE:qzt_scalapack_potrf> TIMEOUT 120)
qz_add_mpi_test(NAME h5_roundtrip COMMAND $<TARGET_FILE:qzt_h5_roundtrip> TIMEOUT 120)
qz_add_test(NAME h5dump_plugin COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/h5dump_plugin.sh TIMEOUT 60)
set_tests_properties(h5dump_plugin PROPERTIES DEPENDS h5_roundtrip_np1)

# CLI contract
set(M $<TARGET_FILE:mpiquant>)
qz_add_test(NAME cli_help COMMAND ${QZ_EXPECT} 0
  "quantize " "eval " "export " "sweep " "plan " "inspect " "layer " "tokenize " "--log-view"
  -- ${M} --help)
qz_add_test(NAME cli_version COMMAND ${QZ_EXPECT} 0
  "^mpiquant [0-9]+\\.[0-9]+\\.[0-9]+" "MPI: +Open MPI" "HDF5: +1\\." "zstd: +1\\." "OpenBLAS: +OpenBLAS" -- ${M} --version)
qz_add_test(NAME cli_unknown_command COMMAND ${QZ_EXPECT} 2
  "unknown command 'frobnicate'" "quantize eval export" -- ${M} frobnicate)
qz_add_test(NAME cli_unknown_global_option COMMAND ${QZ_EXPECT} 2
  "unknown global option '--bogus'" -- ${M} --bogus eval)
qz_add_test(NAME cli_no_command COMMAND ${QZ_EXPECT} 2 "usage: " -- ${M})

# A failure two calls deep on one rank: every rank exits with that rank's
# status (QZ_ERR_IO = 4) and the failing rank prints message + traceback.
# MPIQUANT_FAULT is a test hook of main.c.
foreach(np 1 2 3 4)
  math(EXPR victim "${np} - 1")
  qz_add_test(NAME cli_fault_propagates_np${np} TIMEOUT 60
    ENV "MPIQUANT_FAULT=agree:${victim}"
    COMMAND ${QZ_EXPECT} 4
      "error \\[rank ${victim}\\] \\(QZ_ERR_IO\\): injected fault on rank ${victim}"
      "at mpi_driver/main.c:[0-9]+ in fault_leaf" "in fault_mid" "in fault_injection"
      -- ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${M} inspect x)
  set_tests_properties(cli_fault_propagates_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
# One rank fails while the others are stuck in a collective: no hang, the
# failing rank aborts the job after the grace period.
foreach(np 2 3)
  qz_add_test(NAME cli_fault_no_hang_np${np} TIMEOUT 60
    ENV "MPIQUANT_FAULT=hang:1;MPIQUANT_ABORT_GRACE=2"
    COMMAND ${QZ_EXPECT} nonzero "injected fault on rank 1" "aborting the job"
      -- ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${M} inspect x)
endforeach()

# Folders include only headers of their own layer or lower ones.
qz_add_test(NAME layering COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/layering.sh TIMEOUT 30)

# start-up BLAS kernel choice (mpi_driver/blas_auto.c); exit 77 = skipped
# when the machine's environment sets the kernel itself
qz_add_test(NAME blas_auto TIMEOUT 120 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/blas_auto.sh)
set_tests_properties(blas_auto PROPERTIES SKIP_RETURN_CODE 77 PROCESSORS 2)

# The same checkpoint at np 1, 2, 3 and 4 for every method (h5diff, every
# dataset and attribute): docs/checkpoint.md, "Identical at every np".
set(NPID ${CMAKE_CURRENT_SOURCE_DIR}/np_identity.sh)
qz_add_test(NAME np_identity_rtn TIMEOUT 300 COMMAND ${NPID} rtn --bits 4 --group 32)
qz_add_test(NAME np_identity_gptq TIMEOUT 300 COMMAND ${NPID} gptq --bits 4 --group 32 --act-order)
qz_add_test(NAME np_identity_quantease TIMEOUT 300 COMMAND ${NPID} quantease --bits 3 --group 32)
qz_add_test(NAME np_identity_awq TIMEOUT 600 COMMAND ${NPID} awq --bits 4 --group 32)
qz_add_test(NAME np_identity_smoothquant TIMEOUT 300 COMMAND ${NPID} smoothquant --alpha 0.5)
qz_add_test(NAME np_identity_sq_gptq TIMEOUT 300 COMMAND ${NPID} smoothquant --smooth-then-gptq)
# fp8: 32x32 weight blocks span the ranks' rows (block maxima reduced over
# ranks); static activation scales (maxima reduced over ranks, aux data)
qz_add_test(NAME np_identity_fp8_block TIMEOUT 300 COMMAND ${NPID} fp8 --weight-block 32)
qz_add_test(NAME np_identity_fp8_static TIMEOUT 300 COMMAND ${NPID} fp8 --act static)
foreach(m rtn gptq quantease awq smoothquant sq_gptq fp8_block fp8_static)
  set_tests_properties(np_identity_${m} PROPERTIES PROCESSORS 4)
endforeach()
# hybrid ranks x threads: 1 vs 2 vs 3 OpenMP threads per rank at np 1 and 2
# give identical checkpoints and eval NLL (docs/performance.md)
qz_add_test(NAME threads_identity TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/threads_identity.sh)
# GPTQ's grouped sweep (the factor streamed once per Hessian) vs one linear
# at a time: identical checkpoints at np 1..4, factor bytes per block as
# counted from config.json
qz_add_test(NAME factor_once TIMEOUT 300 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/factor_once.sh)
set_tests_properties(factor_once PROPERTIES PROCESSORS 4)

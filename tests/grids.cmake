# Value grids (--grid nf4|fp4, --double-quant) and OWQ kept columns
# (--keep-columns) for RTN and GPTQ: docs/methods.md.
# Layer level on golden cases vs the numpy reference (tests/grids_ref.py),
# np 1-4 byte-identical to np 1.
qz_add_test(NAME grids_layer TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/grids_layer.sh 1 2 3 4)
set_tests_properties(grids_layer PROPERTIES PROCESSORS 4)
# Model level (stories260K): numpy NF4 RTN perplexity, brackets, bits per
# parameter; crash + resume.
qz_add_test(NAME grids_model_ppl_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/grids_model.sh 2 ppl)
qz_add_test(NAME grids_model_resume_np3 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/grids_model.sh 3 resume)
set_tests_properties(grids_model_ppl_np2 PROPERTIES PROCESSORS 2 LABELS "e2e")
set_tests_properties(grids_model_resume_np3 PROPERTIES PROCESSORS 3 LABELS "e2e")
# Checkpoints identical at np 1-4 (h5diff): every grid path and the
# cross-rank double quantization (group 16: 256-scale blocks span ranks).
set(NPID ${CMAKE_CURRENT_SOURCE_DIR}/np_identity.sh)
qz_add_test(NAME np_identity_rtn_fp4_dq TIMEOUT 300
  COMMAND ${NPID} rtn --grid fp4 --double-quant --group 16)
qz_add_test(NAME np_identity_gptq_nf4_owq TIMEOUT 300
  COMMAND ${NPID} gptq --grid nf4 --double-quant --group 16 --keep-columns 4 --act-order)
# CLI rules
qz_add_test(NAME grids_bad_bits COMMAND ${QZ_EXPECT} 2
  "--grid nf4 stores 4-bit codes: --bits must be 4"
  -- $<TARGET_FILE:mpiquant> quantize --model m --out o --method rtn --grid nf4 --bits 3)
qz_add_test(NAME grids_dq_needs_grid COMMAND ${QZ_EXPECT} 2
  "--double-quant quantizes the block absmax scales"
  -- $<TARGET_FILE:mpiquant> quantize --model m --out o --method gptq --double-quant)
qz_add_test(NAME grids_keep_needs_gptq COMMAND ${QZ_EXPECT} 2
  "--keep-columns needs --method gptq"
  -- $<TARGET_FILE:mpiquant> quantize --model m --out o --method rtn --keep-columns 4)
# Sweep: the "grids" axis and the bits_per_param column (np 2, tiny model).
qz_add_test(NAME grids_sweep_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/grids_sweep.sh)
set_tests_properties(grids_sweep_np2 PROPERTIES PROCESSORS 2 LABELS "e2e")
qz_add_test(NAME grids_sweep_bad_grid COMMAND ${QZ_EXPECT} 5
  "\"grids\" entries must be \"int\", \"nf4\" or \"fp4\", got int8"
  -- $<TARGET_FILE:mpiquant> sweep --spec ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/sweep_bad_grid.json --list)

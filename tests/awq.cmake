# AWQ and SmoothQuant W8A8 (issue 8): model-level perplexities and AWQ
# search ratios against ../shared/golden/README.md, exactness of the
# SmoothQuant smoothing/weights against an independent numpy computation,
# the AWQ folding identity, np-invariance, export, option errors.
set(E2E ${CMAKE_CURRENT_SOURCE_DIR}/quantize_e2e.sh)
set(AWQE2E ${CMAKE_CURRENT_SOURCE_DIR}/awq_e2e.sh)
set(M $<TARGET_FILE:mpiquant>)
set(S ${MPIQUANT_SHARED_DIR})

# SmoothQuant W8A8 (tolerance 0.15 % everywhere)
foreach(np 1 3)
  qz_add_test(NAME sq_a050_stories_np${np} TIMEOUT 600
    COMMAND ${E2E} ${np} stories 3.7517 0.0015 130.13 0.0015 -- --method smoothquant --alpha 0.5)
  set_tests_properties(sq_a050_stories_np${np} PROPERTIES LABELS "e2e")
endforeach()
qz_add_test(NAME sq_a085_stories_np2 TIMEOUT 600
  COMMAND ${E2E} 2 stories 3.7479 0.0015 129.69 0.0015 -- --method smoothquant --alpha 0.85)
qz_add_test(NAME sq_nosmooth_stories_np4 TIMEOUT 600
  COMMAND ${E2E} 4 stories 3.7590 0.0015 129.90 0.0015 -- --method smoothquant --no-smooth)
qz_add_test(NAME sq_a050_babyllama_np2 TIMEOUT 600
  COMMAND ${E2E} 2 babyllama 2.2270 0.0015 29.503 0.0015 -- --method smoothquant --alpha 0.5)
qz_add_test(NAME sq_a085_babyllama_np3 TIMEOUT 600
  COMMAND ${E2E} 3 babyllama 2.2298 0.0015 29.442 0.0015 -- --method smoothquant --alpha 0.85)
qz_add_test(NAME sq_nosmooth_babyllama_np1 TIMEOUT 600
  COMMAND ${E2E} 1 babyllama 2.2251 0.0015 29.473 0.0015 -- --method smoothquant --no-smooth)
set_tests_properties(sq_a085_stories_np2 sq_nosmooth_stories_np4 sq_a050_babyllama_np2
  sq_a085_babyllama_np3 sq_nosmooth_babyllama_np1 PROPERTIES LABELS "e2e")

# SmoothQuant exactness: factors, folded norms, int8 codes/scales of every
# block vs numpy from the fp32 activation maxima (tests/sq_check.py)
# (np 3 only: np-invariance of SmoothQuant checkpoints is np_identity_smoothquant)
qz_add_test(NAME sq_exact_stories_np3 TIMEOUT 900
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sq_exact.sh 3 0.85)

# AWQ: ppl (1 %) and the per-block search ratios of the reference
set(R_S4 "0.35/0.85/0.25,0.20/0.50/0.40,0.40/0.40/0.75,0.40/0.40/0.55,0.55/0.25/0.45")
set(R_S3 "0.60/0.20/0.20,0.40/0.20/0.95,0.05/0.55/0.60,0.40/0.35/0.80,0.50/0.35/0.50")
set(R_B4 "0.65/0.75/0.35,0.50/0.50/0.25,0.50/0.05/0.30,0.90/0.50/0.55,0.05/0.10/0.55")
set(R_B3 "0.25/0.20/0.20,0.30/0.65/0.30,0.00/0.20/0.55,0.30/0.65/0.35,0.30/0.75/0.50")
# one np per configuration keeps the suite's wall time down; awq_np_invariance
# checks that np 1, 2 and 3 give the same checkpoint bit for bit
qz_add_test(NAME awq_w4g32_stories_np3 TIMEOUT 1800
  COMMAND ${AWQE2E} ${R_S4} 3 stories 3.9987 0.01 135.78 0.01 -- --method awq --bits 4 --group 32)
# stories260K w3 wikitext: QZ_TOL_AWQ_W3_STORIES_WIKI = 2 %, decided from the
# spread that rounding alone causes (docs/methods.md, "Agreement with the
# reference"): with all 25 search ratios identical to the reference, the
# OpenBLAS kernels give 158.01 (Prescott), 158.18 (Haswell), 158.11
# (SkylakeX, Cooperlake) = -1.53 % .. -1.42 %, and summing mean|x| in f32
# instead of double gives 161.26 (+0.50 %). 2 % covers that band with 0.47
# points to spare and still separates GPTQ w3 g32 (164.66, +2.6 %) and RTN w3
# (194.98). The ratios stay exact.
qz_add_test(NAME awq_w3g32_stories_np2 TIMEOUT 1800
  COMMAND ${AWQE2E} ${R_S3} 2 stories 5.6406 0.01 160.46 0.02 -- --method awq --bits 3 --group 32)
qz_add_test(NAME awq_w4g32_babyllama_np1 TIMEOUT 1800
  COMMAND ${AWQE2E} ${R_B4} 1 babyllama 2.3056 0.01 29.768 0.01 -- --method awq --bits 4 --group 32)
qz_add_test(NAME awq_w3g32_babyllama_np4 TIMEOUT 1800
  COMMAND ${AWQE2E} ${R_B3} 4 babyllama 2.6512 0.01 32.286 0.01 -- --method awq --bits 3 --group 32)
set_tests_properties(awq_w4g32_stories_np3 awq_w3g32_stories_np2
  awq_w4g32_babyllama_np1 awq_w3g32_babyllama_np4
  PROPERTIES LABELS "e2e")

# AWQ folding identity: scales folded, not quantized -> same logits (1e-4)
qz_test_program(qzt_awq_fold mpi/test_awq_fold.c)
qz_add_mpi_test(NAME awq_fold COMMAND $<TARGET_FILE:qzt_awq_fold> TIMEOUT 900)
# the o_proj <- v_proj search needs a model without GQA: a synthetic one
foreach(np 1 3)
  qz_add_test(NAME awq_fold_mha_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/awq_mha.sh ${np} $<TARGET_FILE:qzt_awq_fold>)
endforeach()
# the llm-awq quantizer and the SmoothQuant int8 quantizer on planted rows
qz_test_program(qzt_awq_quant unit/test_awq_quant.c)
qz_add_test(NAME awq_quant COMMAND qzt_awq_quant TIMEOUT 60)

# the same AWQ checkpoint at np 1, 2 and 3 on the GQA model (2 blocks)
qz_add_test(NAME awq_np_invariance TIMEOUT 1800
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/awq_np.sh)
# AWQ -> GPTQ export: codes through the independent dequantizer, folded
# RMSNorm weights in the export
qz_add_test(NAME awq_export_np2 TIMEOUT 900
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/awq_export.sh 2)

# option errors
qz_add_test(NAME awq_opt_sym COMMAND ${QZ_EXPECT} 2 "awq uses the zero-point"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out x --method awq --sym)
qz_add_test(NAME awq_opt_alpha COMMAND ${QZ_EXPECT} 2 "--alpha needs --method smoothquant"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out x --method awq --alpha 0.5)
qz_add_test(NAME awq_opt_then_gptq COMMAND ${QZ_EXPECT} 2 "--awq-then-gptq needs --method awq"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out x --method gptq --awq-then-gptq)
qz_add_test(NAME sq_opt_bits COMMAND ${QZ_EXPECT} 2 "smoothquant is W8A8"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out x --method smoothquant --bits 4)
qz_add_test(NAME sq_opt_both COMMAND ${QZ_EXPECT} 2 "give --alpha or --no-smooth, not both"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out x --method smoothquant --alpha 0.5 --no-smooth)
qz_add_test(NAME sq_opt_range COMMAND ${QZ_EXPECT} 2 "--alpha"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out x --method smoothquant --alpha 1.5)
qz_add_test(NAME awq_needs_calib COMMAND ${QZ_EXPECT} 2 "needs calibration data"
  -- ${M} quantize --model ${S}/models/stories260K-hf --out ${CMAKE_BINARY_DIR}/test-tmp/awq_needs_calib/ck --method awq)

# --awq-then-gptq has no reference number: AWQ scales + clipping, then GPTQ;
# it must stay within 2 % of the GPTQ reference (2.2598 / 29.085; measured
# 2.2698 / 29.047) and below AWQ alone (2.3056)
qz_add_test(NAME awq_then_gptq_babyllama_np2 TIMEOUT 1800
  COMMAND ${E2E} 2 babyllama 2.2598 0.02 29.085 0.02 -- --method awq --bits 4 --group 32 --awq-then-gptq)
set_tests_properties(awq_then_gptq_babyllama_np2 PROPERTIES LABELS "e2e")

# SIGKILL in block 3 + --resume (fp-stream replay): identical checkpoint
qz_add_test(NAME awq_resume_np2 TIMEOUT 1200
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/awq_resume.sh 2)

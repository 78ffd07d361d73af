# GPTQ export checked by an independent numpy dequantizer (tests/export_check.py).
qz_add_test(NAME export_gptq_w4g32_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_roundtrip.sh 2)
qz_add_test(NAME export_gptq_w4g32_act_np3 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_roundtrip.sh 3 --act-order)
qz_add_test(NAME export_gptq_w3g32_np1 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_roundtrip.sh 1 --bits 3)
# SmoothQuant W8A8 -> compressed-tensors int-quantized, checked by an
# independent numpy reader + W8A8 forward (tests/export_ct_check.py).
foreach(np 1 3)
  qz_add_test(NAME export_ct_w8a8_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_ct.sh ${np})
endforeach()

# weight-only checkpoints -> compressed-tensors pack-quantized, dequantized
# exactly by an independent numpy reader (tests/export_ct_packed_check.py)
foreach(np 1 3)
  qz_add_test(NAME export_ct_packed_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_ct_packed.sh ${np})
  set_tests_properties(export_ct_packed_np${np} PROPERTIES PROCESSORS ${np})
endforeach()

# the W8A8-INT row (GPTQ w8 channel sym, --act-bits 8) -> int-quantized,
# independent numpy W8A8 forward and reader (tests/export_ct_check.py)
foreach(np 1 3)
  qz_add_test(NAME w8a8_int_gptq_np${np} TIMEOUT 300
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/w8a8_int.sh ${np})
  set_tests_properties(w8a8_int_gptq_np${np} PROPERTIES PROCESSORS ${np})
endforeach()

# GPTQ export checked by an independent numpy dequantizer (tests/export_check.py).
qz_add_test(NAME export_gptq_w4g32_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_roundtrip.sh 2)
qz_add_test(NAME export_gptq_w4g32_act_np3 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_roundtrip.sh 3 --act-order)
qz_add_test(NAME export_gptq_w3g32_np1 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/export_roundtrip.sh 1 --bits 3)

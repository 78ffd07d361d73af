# Benchmarks are not timed in tests; only their argument handling is checked.
if(MPIQUANT_BUILD_BENCH)
  qz_add_test(NAME bench_args_bad COMMAND ${QZ_EXPECT} 2
    "argument 2 \\(in\\) must be an integer in \\[1, 1048576\\], got 'x'"
    -- $<TARGET_FILE:bench_quantease> 64 x)
  qz_add_test(NAME bench_args_help COMMAND ${QZ_EXPECT} 0
    "bench_gptq \\[out=4096\\] \\[in=4096\\] \\[tokens=2\\*in\\]"
    -- $<TARGET_FILE:bench_gptq> --help)
endif()

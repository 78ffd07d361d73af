# mpiquant sweep (no Slurm): the 4-point examples/sweep-tiny.json at np 2;
# rows, equality with quantize + eval by hand, resume, --point, fp32
# baseline, --plot (gnuplot-nox from scripts/install-deps.sh), --emit-slurm,
# spec errors. See tests/sweep_tiny.sh.
qz_add_test(NAME sweep_tiny_np2 TIMEOUT 240
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sweep_tiny.sh)
set_tests_properties(sweep_tiny_np2 PROPERTIES PROCESSORS 2 LABELS "unit;sweep")

# A real single-node Slurm (installs slurm-wlm + munge when missing, starts
# its own munged/slurmctld/slurmd, stops them by pid): the same sweep as a
# job array through slurm/sweep-array.sbatch, plus quantize.sbatch and
# eval.sbatch, perplexities equal to the direct run. About 50 s here; needs
# root (exit 77 = skipped otherwise). Only this test: ctest -L slurm
qz_add_test(NAME slurm_local_sweep TIMEOUT 900
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/slurm/run.sh)
set_tests_properties(slurm_local_sweep PROPERTIES PROCESSORS 2 LABELS "slurm"
  SKIP_RETURN_CODE 77)

# Every method in one sweep (rtn, gptq, quantease, awq, smoothquant and the
# hidden test-only testclip) on the tiny model at np 2, each row's ppl equal
# to a direct quantize + eval; testclip's own option through quantize,
# layer, plan and export. See tests/sweep_methods.sh.
qz_add_test(NAME sweep_methods_np2 TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sweep_methods.sh)
set_tests_properties(sweep_methods_np2 PROPERTIES PROCESSORS 2 LABELS "unit;sweep")
# "tasks" in a sweep: task columns in results.csv, the accuracy table in
# results.md, rows equal to eval --task by hand (tests/sweep_tasks.sh).
qz_add_test(NAME sweep_tasks_np2 TIMEOUT 240 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sweep_tasks.sh)
set_tests_properties(sweep_tasks_np2 PROPERTIES PROCESSORS 2 LABELS "unit;sweep")

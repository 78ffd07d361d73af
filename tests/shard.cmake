# shard: block forward, windows, collective model loading, eval.
qz_test_program(qzt_fwd_block unit/test_fwd_block.c)
qz_test_program(qzt_fwd_rope unit/test_fwd_rope.c)
qz_add_test(NAME fwd_block COMMAND qzt_fwd_block TIMEOUT 60)
qz_add_test(NAME fwd_rope COMMAND qzt_fwd_rope TIMEOUT 30)
qz_test_program(qzt_fwd_model mpi/test_fwd_model.c)
qz_add_mpi_test(NAME fwd_model COMMAND $<TARGET_FILE:qzt_fwd_model> TIMEOUT 300)
qz_test_program(qzt_fwd_windows unit/test_fwd_windows.c)
qz_add_test(NAME fwd_windows COMMAND qzt_fwd_windows TIMEOUT 30)

# mpiquant eval on the golden token windows (text input: see eval_text_*)
set(M $<TARGET_FILE:mpiquant>)
set(S ${MPIQUANT_SHARED_DIR})
foreach(np 1 2 3 4)
  qz_add_test(NAME eval_tokens_stories_np${np} TIMEOUT 120
    COMMAND ${QZ_EXPECT} 0 "^ppl 3\\.7524 " "4088 tokens, 8 windows x 512"
      "\"nll_sum\":5405\\.91264" "\"bytes_read\":1040128,\"bytes_model\":1040128"
      "eval blocks: 6/6"
      -- ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${M} eval
         --model ${S}/models/stories260K-hf
         --tokens ${S}/golden/calib/stories260K_eval_tinystories_ids.txt --json)
  set_tests_properties(eval_tokens_stories_np${np} PROPERTIES PROCESSORS ${np})
endforeach()
qz_add_test(NAME eval_help COMMAND ${QZ_EXPECT} 0 "usage: mpiquant eval" "--tokens" "--max-tokens"
  -- ${M} eval --help)
qz_add_test(NAME eval_needs_model COMMAND ${QZ_EXPECT} 2 "--model DIR or --ckpt CKPT is required"
  -- ${M} eval --tokens x.txt)
qz_add_test(NAME eval_one_input COMMAND ${QZ_EXPECT} 2 "exactly one of --data"
  -- ${M} eval --model ${S}/models/stories260K-hf)
qz_add_test(NAME eval_no_window COMMAND ${QZ_EXPECT} 3 "no complete window of 8192 tokens"
  -- ${M} eval --model ${S}/models/stories260K-hf --seqlen 8192
     --tokens ${S}/golden/calib/stories260K_eval_tinystories_ids.txt)
qz_add_test(NAME eval_max_tokens COMMAND ${QZ_EXPECT} 0 "over 3066 tokens, 6 windows x 512"
  -- ${M} eval --model ${S}/models/stories260K-hf --max-tokens 3100
     --tokens ${S}/golden/calib/stories260K_eval_tinystories_ids.txt)
qz_add_test(NAME eval_missing_model COMMAND ${QZ_EXPECT} nonzero "no-such-model"
  -- ${M} eval --model ${S}/models/no-such-model
     --tokens ${S}/golden/calib/stories260K_eval_tinystories_ids.txt)

# Text input through tokenizer.json: the golden README reference perplexities
# (fp32 +-0.1 %: 3.7524, 130.41, 2.2237, 29.405; bf16 within 1 % of 3.7524),
# the golden token counts, and NLL sums equal to the golden-window runs to 9
# digits. Bit-identity across np is checked in fwd_model (vs a 1-rank run).
function(qz_eval_text name model data win ppl ntok nll)
  foreach(np 1 2 3 4)
    qz_add_test(NAME eval_text_${name}_np${np} TIMEOUT 120
      COMMAND ${QZ_EXPECT} 0 "^ppl ${ppl} " "-> ${ntok} tokens" "\"nll_sum\":${nll}"
        -- ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${M} eval
           --model ${S}/models/${model} --data ${S}/data/${data} --windows ${win} --json)
    set_tests_properties(eval_text_${name}_np${np} PROPERTIES PROCESSORS ${np})
  endforeach()
endfunction()
qz_eval_text(stories_tiny stories260K-hf tinystories_valid_head.txt 8
  "3\\.752[34]" 393018 "5405\\.91264")
qz_eval_text(stories_wiki stories260K-hf wikitext2_raw_test_gptq_joined.txt 8
  "130\\.(40|41|42)" 815069 "19911\\.2563")
qz_eval_text(baby_tiny babyllama-tok105-hf tinystories_valid_head.txt 16
  "2\\.223[6-8]" 793452 "3260\\.64432")
qz_eval_text(baby_wiki babyllama-tok105-hf wikitext2_raw_test_gptq_joined.txt 16
  "29\\.40[3-7]" 1294337 "13795\\.1079")
qz_eval_text(stories_bf16 stories260K-hf-bf16 tinystories_valid_head.txt 8
  "3\\.7[2-8][0-9]+" 393018 "5408\\.199")
# vocab-sharded head: np 1-4 identical, equal to the unsharded path
qz_add_test(NAME eval_vocab_shard TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/eval_vocab_shard.sh)

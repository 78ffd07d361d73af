/* mpiquant eval: distributed perplexity of a model on a text or token file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "driver.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/log.h"
#include "mpiquant/method.h"
#include "mpiquant/mem.h"
#include "mpiquant/model.h"
#include "mpiquant/tokenizer.h"
#include "mpiquant/windows.h"
#include "cmd_eval.h"
#include "model_act.h"
#include "qblock.h"
#include "rotate_cli.h"
#include "task_eval.h"

static void usage(void) {
  printf(
      "usage: mpiquant eval (--model DIR | --ckpt CKPT) (--data TEXT | --tokens FILE)\n"
      "                     [options]\n"
      "\n"
      "Perplexity with the GPTQ protocol: the whole file as one token stream\n"
      "(no BOS), non-overlapping windows of L tokens from the start, each an\n"
      "independent sequence; NLL of tokens 2..L of every window; PPL =\n"
      "exp(mean NLL).  Windows are split over the ranks; each block's weights\n"
      "are read from disk once per job.\n"
      "\n"
      "  --model DIR        Hugging Face model dir (config.json, safetensors,\n"
      "                     tokenizer.json for --data)\n"
      "  --ckpt CKPT        a quantize checkpoint: its dequantized (fake-quant)\n"
      "                     weights, folded norms, activation quantization\n"
      "                     (SmoothQuant, --act-bits) and rotations / KV-cache\n"
      "                     quantization (--rotate, --kv-bits); the model dir is\n"
      "                     the one it records\n"
      "                     unless --model is given\n"
      "  --data FILE        UTF-8 text, tokenized with DIR/tokenizer.json\n"
      "  --tokens FILE      pre-tokenized ids: .bin (uint32 LE stream) or .txt\n"
      "                     (one window per line; lines are concatenated)\n"
      "  --seqlen L         window length (default min(2048,\n"
      "                     max_position_embeddings))\n"
      "  --windows K        only the first K windows\n"
      "  --max-tokens T     only the windows inside the first T tokens\n"
      "  --batch-windows K  windows per forward batch on a rank (memory vs\n"
      "                     nothing else: results are identical; default: the\n"
      "                     stage buffers stay below 1 GiB)\n"
      "  --json             one JSON line with the result on stdout\n"
      "  --full-head        every rank holds the whole [vocab, hidden] output\n"
      "                     head (default: vocabularies above 4096 are sharded\n"
      "                     over the ranks, V/P x H each, and the embedding is\n"
      "                     read per token); for checks: NLL (and --task\n"
      "                     loglikelihoods) agree to ~1e-12\n"
      "Progress with ETA goes to stderr on rank 0 (-q turns it off).\n"
      "\n"
      "Benchmark accuracy (instead of --data/--tokens; lm-evaluation-harness 0.4\n"
      "request semantics, docs/tasks.md): one line per task with acc (acc_norm,\n"
      "perplexity) +- standard error, identical at any number of ranks.\n");
  qz_task_cli_help(stdout);
}

typedef struct {
  const char *model, *data, *tokens, *ckpt;
  long seqlen, windows, max_tokens, batch;
  int json, full_head;
  qz_task_cli task;
} eval_opts;

static int parse(int argc, char **argv, eval_opts *o) {
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--full-head") == 0) {
      o->full_head = 1;
      continue;
    }
    int used = 0;
    QZ_CALL(qz_task_cli_option(&o->task, a, v, &used));
    if (used) {
      i += used - 1;
      continue;
    }
    int takes = strcmp(a, "--model") == 0 || strcmp(a, "--ckpt") == 0 || strcmp(a, "--data") == 0 ||
                strcmp(a, "--tokens") == 0 || strcmp(a, "--seqlen") == 0 ||
                strcmp(a, "--windows") == 0 || strcmp(a, "--max-tokens") == 0 ||
                strcmp(a, "--batch-windows") == 0;
    QZ_CHECK(takes, QZ_ERR_USAGE,
             "eval: unknown option '%s' (see mpiquant eval --help)", a);
    QZ_CHECK(v, QZ_ERR_USAGE, "eval: option %s needs a value", a);
    i++;
    if (strcmp(a, "--model") == 0) o->model = v;
    else if (strcmp(a, "--ckpt") == 0) o->ckpt = v;
    else if (strcmp(a, "--data") == 0) o->data = v;
    else if (strcmp(a, "--tokens") == 0) o->tokens = v;
    else if (strcmp(a, "--seqlen") == 0)
      QZ_CALL(qz_cli_int(a, v, 2, 1L << 30, &o->seqlen));
    else if (strcmp(a, "--batch-windows") == 0)
      QZ_CALL(qz_cli_int(a, v, 1, 1L << 40, &o->batch));
    else if (strcmp(a, "--windows") == 0)
      QZ_CALL(qz_cli_int(a, v, 1, 1L << 40, &o->windows));
    else
      QZ_CALL(qz_cli_int(a, v, 2, 1L << 50, &o->max_tokens));
  }
  QZ_CHECK(o->model || o->ckpt, QZ_ERR_USAGE,
           "eval: --model DIR or --ckpt CKPT is required");
  if (o->task.tasks)
    QZ_CHECK(!o->data && !o->tokens && !o->windows && !o->max_tokens && !o->seqlen,
             QZ_ERR_USAGE, "eval: --task scores benchmark requests; --data, --tokens, "
             "--seqlen, --windows and --max-tokens are for perplexity");
  else
    QZ_CHECK(!o->data != !o->tokens, QZ_ERR_USAGE,
             "eval: give exactly one of --data TEXT or --tokens FILE (or --task NAME)");
  QZ_CHECK(!(o->windows && o->max_tokens), QZ_ERR_USAGE,
           "eval: --windows and --max-tokens exclude each other");
  return QZ_OK;
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

/* The token stream on rank 0 (not collective). */
static int read_stream(const eval_opts *o, int32_t **ids, int64_t *n) {
  *ids = NULL;
  *n = 0;
  if (o->tokens) {
    if (ends_with(o->tokens, ".txt")) {
      int64_t nwin = 0, wl = 0;
      QZ_CALL(qz_windows_read_txt(o->tokens, ids, &nwin, &wl));
      *n = nwin * wl;
    } else {
      QZ_CALL(qz_tokens_read_bin(o->tokens, ids, n));
    }
    return QZ_OK;
  }
  char *text = NULL;
  size_t len = 0;
  qz_tokenizer *tok = NULL;
  int st = QZ_OK;
  QZ_CALL_DONE(qz_tokenizer_load(o->model, &tok));
  QZ_CALL_DONE(qz_read_file(o->data, &text, &len));
  double t = qz_wtime();
  /* the whole file as one string, no BOS/EOS (GPTQ eval protocol) */
  QZ_CALL_DONE(qz_tokenizer_encode(tok, text, len, 0, ids, n));
  qz_info("eval: tokenized %s: %zu bytes -> %lld tokens in %.2f s", o->data,
          len, (long long)*n, qz_wtime() - t);
done:
  free(text);
  qz_tokenizer_free(&tok);
  return st;
}

/* The activation hook of the method that wrote checkpoint ck (manifest
 * options "method"), when it has one; *ops receives that method (to free
 * the hook). Collective on comm. */
static int ckpt_act_hook(qz_ckpt *ck, MPI_Comm comm, const qz_model_config *cfg,
                         qz_act_hook *h, const qz_method_ops **ops) {
  *ops = NULL;
  json_t *j = json_loads(qz_ckpt_options_json(ck), 0, NULL);
  const char *name = json_string_value(json_object_get(j, "method"));
  const qz_method_ops *m = name ? qz_method_find(name) : NULL;
  json_decref(j);
  if (!m || !m->eval_act) return QZ_OK;
  *ops = m;
  QZ_CALL(m->eval_act(ck, comm, cfg, h));
  if (h->fn) qz_info("eval: checkpoint activations as %s defines them", m->name);
  return QZ_OK;
}

/* A rotated checkpoint's blocks: the checkpoint's weights and, for
 * DuQuant, the block's transforms into the rotation. Collective. */
typedef struct {
  qz_ckpt_source *cks;
  qz_rot *rot;
} rot_source;

static int rot_block_source(void *vctx, qz_model *m, int layer, qz_block_weights *w) {
  rot_source *s = vctx;
  QZ_CALL(qz_ckpt_block_source(s->cks, m, layer, w));
  return qz_rotcli_load_block(s->cks->ck, layer, s->rot);
}

/* The command; `report` prints the result lines on rank 0's stdout, `out`
 * (may be NULL) receives the result on every rank. */
static int eval_main(qz_ctx *ctx, int argc, char **argv, int report,
                     qz_eval_result *out, qz_task_results *tout) {
  eval_opts o;
  QZ_CALL(parse(argc, argv, &o));
  int st = QZ_OK;
  qz_model *m = NULL;
  int32_t *ids = NULL;
  int64_t n = 0;
  qz_ckpt_source cks = {0};
  qz_act_hook hook = {0};
  const qz_method_ops *hook_ops = NULL;
  qz_act_hook model_hook = {0}; /* an FP8 model's declared activations */
  qz_rot *rot = NULL;
  qz_model_hook mhook = {0};
  rot_source rsrc = {&cks, NULL};
  if (o.ckpt) {
    QZ_CALL_DONE(qz_ckpt_open(ctx->comm, o.ckpt, &cks.ck));
    if (!o.model) o.model = qz_ckpt_model_dir(cks.ck);
    QZ_CHECK_DONE(*o.model, QZ_ERR_ARG,
                  "checkpoint %s records no model directory; pass --model DIR",
                  o.ckpt);
    int done_blocks = qz_ckpt_first_missing(cks.ck);
    qz_info("eval: checkpoint %s (%d of %d blocks complete), model %s", o.ckpt,
            done_blocks, qz_ckpt_nblocks(cks.ck), o.model);
  }
  QZ_CALL_DONE(qz_model_open(ctx->comm, o.model, &m));
  if (cks.ck)
    QZ_CHECK_DONE(qz_ckpt_nblocks(cks.ck) == qz_model_config_of(m)->num_hidden_layers,
                  QZ_ERR_ARG, "checkpoint %s has %d blocks, model %s has %lld",
                  o.ckpt, qz_ckpt_nblocks(cks.ck), o.model,
                  (long long)qz_model_config_of(m)->num_hidden_layers);
  const qz_model_config *cfg = qz_model_config_of(m);

  /* weights and activations as the model / checkpoint / export defines them */
  qz_eval_opts eo = {.progress = 1, .batch_windows = o.batch, .full_head = o.full_head};
  if (cks.ck) {
    eo.block_source = qz_ckpt_block_source;
    eo.block_source_ctx = &cks;
    eo.act_quant_bits = qz_ckpt_act_bits(cks.ck); /* SmoothQuant W8A8 */
    QZ_CALL_DONE(ckpt_act_hook(cks.ck, ctx->comm, cfg, &hook, &hook_ops));
    if (hook.fn) {
      QZ_CHECK_DONE(!eo.act_quant_bits, QZ_ERR_FORMAT,
                    "checkpoint %s: options give both act_bits and a method activation "
                    "hook", o.ckpt);
      eo.act_hook = &hook;
    }
    QZ_CALL_DONE(qz_error_agree(ctx->comm, qz_rotcli_from_ckpt(cks.ck, cfg, &rot)));
    if (rot) { /* rotations, activation and KV quantizers in one pair of hooks */
      QZ_CHECK_DONE(!hook.fn, QZ_ERR_FORMAT,
                    "checkpoint %s: options give both a rotation and a method activation "
                    "hook", o.ckpt);
      const qz_rot_params *rp = qz_rot_params_of(rot);
      hook = qz_rot_act_hook(rot, 1);
      eo.act_hook = &hook;
      eo.act_quant_bits = 0;
      mhook = qz_rot_model_hook(rot);
      eo.model_hook = &mhook;
      rsrc.rot = rot;
      eo.block_source = rot_block_source;
      eo.block_source_ctx = &rsrc;
      qz_info("eval: transform %s; activations: %d bits (0 = fp) per token, %s, clip %g; "
              "KV cache: %d bits (0 = fp)", qz_rot_describe(rot), rp->act_bits,
              rp->act_asym ? "asymmetric" : "symmetric", rp->act_clip, rp->kv_bits);
    } else
    if (eo.act_quant_bits)
      qz_info("eval: checkpoint activations: int%d per token, dynamic, symmetric, "
              "at the input of every linear", eo.act_quant_bits);
  } else if (cfg->gptq_bits) {
    qz_info("eval: GPTQ v1 model: %d-bit weights dequantized on load", cfg->gptq_bits);
  } else if (cfg->ct_int8) {
    eo.act_quant_bits = cfg->ct_act_bits; /* compressed-tensors W8A8 export */
    qz_info("eval: compressed-tensors int-quantized model: int8 per-channel weights%s",
            eo.act_quant_bits ? ", int8 per-token dynamic activations at every linear input"
                              : " (W8A16)");
  } else if (cfg->ct_packed_bits) {
    qz_info("eval: compressed-tensors pack-quantized model: %d-bit weights dequantized "
            "on load (W%dA16)", cfg->ct_packed_bits, cfg->ct_packed_bits);
  } else if (cfg->fp8) {
    qz_info("eval: FP8 model: weights dequantized on load (codes x scale)");
    st = qz_model_fp8_act_hook(m, &model_hook);
    QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
    if (model_hook.fn) eo.act_hook = &model_hook;
  }
  if (o.task.tasks) {
    qz_task_model tm = {eo.block_source, eo.block_source_ctx, eo.act_quant_bits,
                        eo.act_hook, eo.model_hook, o.full_head};
    QZ_CALL_DONE(qz_task_eval(ctx, m, o.model, &o.task, &tm, report, o.json, tout));
    goto done;
  }

  /* rank 0 reads / tokenizes, everyone gets the stream */
  if (ctx->rank == 0) st = read_stream(&o, &ids, &n);
  if (st == QZ_OK && ctx->rank == 0)
    st = qz_tokens_check_vocab(o.tokens ? o.tokens : o.data, ids, n, cfg->vocab_size);
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  QZ_CALL_DONE(qz_allreduce_i64(ctx->comm, &n, 1, MPI_MAX));
  if (ctx->rank != 0)
    QZ_CALL_DONE(qz_error_agree(ctx->comm, qz_alloc((size_t)n, sizeof *ids,
                                                    "token ids", &ids)));
  else
    QZ_CALL_DONE(qz_error_agree(ctx->comm, QZ_OK));
  for (int64_t off = 0; off < n; off += 1 << 28) { /* int counts */
    int cnt = (int)(n - off < (1 << 28) ? n - off : (1 << 28));
    int rc = MPI_Bcast(ids + off, cnt, MPI_INT32_T, 0, ctx->comm);
    qz_count_bcast(ctx->comm, 0, 4 * (int64_t)cnt);
    QZ_CHECK_DONE(rc == MPI_SUCCESS, QZ_ERR_MPI, "broadcast of token ids failed");
  }

  int64_t L = o.seqlen;
  if (L == 0) {
    L = cfg->max_position_embeddings < 2048 ? cfg->max_position_embeddings : 2048;
    if (L < 2) L = 2048;
  }
  eo.seqlen = L;
  if (L > cfg->max_position_embeddings)
    qz_warn("eval: --seqlen %lld exceeds max_position_embeddings %lld of %s",
            (long long)L, (long long)cfg->max_position_embeddings, o.model);
  int64_t nwin = 0;
  QZ_CALL_DONE(qz_windows_eval_count(n, L, o.windows, o.max_tokens, &nwin));
  qz_info("eval: %s on %s: %lld tokens, %lld windows x %lld, %d ranks",
          o.model, o.tokens ? o.tokens : o.data, (long long)n, (long long)nwin,
          (long long)L, ctx->size);

  qz_eval_result r;
  QZ_CALL_DONE(qz_eval_ppl(m, ids, nwin, &eo, &r));
  if (out) *out = r;
  if (report && ctx->rank == 0) {
    char b[32];
    printf("ppl %.5g  (mean NLL %.6f over %lld tokens, %lld windows x %lld, "
           "np %d, %.2f s, %.0f tokens/s, weights read %s in total)\n",
           r.ppl, r.nll_mean, (long long)r.tokens_scored, (long long)r.nwin,
           (long long)r.seqlen, ctx->size, r.seconds, r.tokens_per_s,
           qz_fmt_bytes((double)r.bytes_read, b, sizeof b));
    if (o.json) {
      json_t *j = json_pack(
          "{s:s, s:s, s:s, s:f, s:f, s:f, s:I, s:I, s:I, s:i, s:f, s:f, s:I, "
          "s:I}",
          "command", "eval", "model", o.model, "data",
          o.tokens ? o.tokens : o.data, "ppl", r.ppl, "nll_mean", r.nll_mean,
          "nll_sum", r.nll_sum, "tokens_scored", (json_int_t)r.tokens_scored,
          "windows", (json_int_t)r.nwin, "seqlen", (json_int_t)r.seqlen, "np",
          ctx->size, "seconds", r.seconds, "tokens_per_s", r.tokens_per_s,
          "bytes_read", (json_int_t)r.bytes_read, "bytes_model",
          (json_int_t)qz_model_bytes_on_disk(m));
      char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
      if (txt) printf("%s\n", txt);
      free(txt);
      json_decref(j);
    }
    fflush(stdout);
  }
done:
  if (hook_ops && hook_ops->eval_act_free) hook_ops->eval_act_free(&hook);
  qz_model_fp8_act_free(&model_hook);
  qz_rot_destroy(&rot);
  qz_free(&ids);
  qz_model_close(&m);
  qz_ckpt_close(&cks.ck);
  return st;
}

int qz_cmd_eval(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) usage();
    return QZ_OK;
  }
  return eval_main(ctx, argc, argv, 1, NULL, NULL);
}

int qz_eval_run(qz_ctx *ctx, int argc, char **argv, qz_eval_result *res) {
  return eval_main(ctx, argc, argv, 0, res, NULL);
}

int qz_eval_task_run(qz_ctx *ctx, int argc, char **argv, qz_task_results *res) {
  memset(res, 0, sizeof *res);
  return eval_main(ctx, argc, argv, 0, NULL, res);
}

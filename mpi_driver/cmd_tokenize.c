/* mpiquant tokenize --model DIR --text FILE [--out ids.bin|ids.txt]
 * Encodes the whole file as one string with the model's tokenizer.json (the
 * evaluation/calibration convention: no BOS unless --bos).  Rank 0 works;
 * every rank returns the same status. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/tokenizer.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: mpiquant tokenize --model DIR --text FILE [--out PATH] [--window N]\n"
          "                         [--bos] [--count]\n\n"
          "Tokenizes FILE as one string with DIR/tokenizer.json (or a tokenizer.json\n"
          "path), the way eval and quantize do.\n\n"
          "  --model DIR    model directory or tokenizer.json\n"
          "  --text FILE    UTF-8 text\n"
          "  --out PATH     write the ids: PATH ending in .txt = one window per line\n"
          "                 (needs --window; a shorter tail is dropped), anything else\n"
          "                 = little-endian uint32 .bin; default: ids on stdout\n"
          "  --window N     print/write N ids per line (only full windows)\n"
          "  --bos          apply the post-processor (adds <s>)\n"
          "  --count        print only the number of tokens\n"
          "  -h, --help     this text\n");
}

typedef struct {
  const char *model, *text, *out;
  long window;
  int bos, count;
} tok_opts;

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static int run(const tok_opts *o) {
  qz_tokenizer *tok = NULL;
  char *text = NULL;
  size_t len = 0;
  int32_t *ids = NULL;
  int64_t n = 0;
  int st = QZ_OK;
  QZ_CALL_DONE(qz_tokenizer_load(o->model, &tok));
  QZ_CALL_DONE(qz_read_file(o->text, &text, &len));
  double t0 = qz_wtime();
  st = qz_tokenizer_encode(tok, text, len, o->bos, &ids, &n);
  if (st) {
    qz_error_prefix("%s: ", o->text);
    qz_error_trace(__FILE__, __LINE__, __func__);
    goto done;
  }
  qz_info("%s: %lld tokens from %zu bytes in %.3f s", o->text, (long long)n, len,
          qz_wtime() - t0);
  int64_t w = o->window > 0 ? o->window : 0;
  if (o->count) {
    printf("%lld\n", (long long)n);
  } else if (o->out && ends_with(o->out, ".txt")) {
    QZ_CHECK_DONE(w > 0, QZ_ERR_USAGE, "tokenize: --out %s (window text format) "
                  "needs --window N", o->out);
    QZ_CALL_DONE(qz_windows_write_txt(o->out, ids, n / w, w));
    qz_info("wrote %lld windows of %lld ids to %s", (long long)(n / w),
            (long long)w, o->out);
  } else if (o->out) {
    int64_t m = w ? n / w * w : n;
    QZ_CALL_DONE(qz_tokens_write_bin(o->out, ids, m));
    qz_info("wrote %lld ids to %s", (long long)m, o->out);
  } else {
    int64_t m = w ? n / w * w : n;
    for (int64_t i = 0; i < m; i++)
      printf("%d%c", ids[i], (w ? (i + 1) % w == 0 : i + 1 == m) ? '\n' : ' ');
  }
done:
  free(ids);
  free(text);
  qz_tokenizer_free(&tok);
  return st;
}

int qz_cmd_tokenize(qz_ctx *ctx, int argc, char **argv) {
  static const struct option opts[] = {
      {"model", required_argument, NULL, 'm'}, {"text", required_argument, NULL, 't'},
      {"out", required_argument, NULL, 'o'},   {"window", required_argument, NULL, 'w'},
      {"bos", no_argument, NULL, 'b'},         {"count", no_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
  tok_opts o = {0};
  int help = 0, c;
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":m:t:o:w:bch", opts, NULL)) != -1) {
    switch (c) {
    case 'm': o.model = optarg; break;
    case 't': o.text = optarg; break;
    case 'o': o.out = optarg; break;
    case 'w': QZ_CALL(qz_cli_int("--window", optarg, 1, 1L << 30, &o.window)); break;
    case 'b': o.bos = 1; break;
    case 'c': o.count = 1; break;
    case 'h': help = 1; break;
    case ':':
      QZ_FAIL(QZ_ERR_USAGE, "tokenize: option '%s' needs a value",
              argv[optind - 1]);
    default:
      QZ_FAIL(QZ_ERR_USAGE, "tokenize: unknown option '%s' (see mpiquant "
              "tokenize --help)", argv[optind - 1]);
    }
  }
  if (help) {
    if (ctx->rank == 0) usage(stdout);
    return QZ_OK;
  }
  QZ_CHECK(o.model && o.text, QZ_ERR_USAGE,
           "tokenize: --model DIR and --text FILE are required (see mpiquant "
           "tokenize --help)");
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "tokenize: unexpected argument '%s'",
           argv[optind]);
  int st = ctx->rank == 0 ? run(&o) : QZ_OK;
  fflush(stdout);
  QZ_CALL(qz_error_agree(ctx->comm, st));
  return QZ_OK;
}

/* mpiquant export: checkpoint -> Hugging Face GPTQ or compressed-tensors safetensors. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "mpiquant/error.h"
#include "mpiquant/export.h"
#include "mpiquant/method.h"
#include "mpiquant/timing.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: mpiquant export --ckpt CKPT --out DIR [--format gptq|compressed-tensors]\n"
          "                       [--model DIR] [--max-shard-size GB] [--overwrite]\n\n"
          "Writes a Hugging Face model directory that transformers and vLLM load:\n"
          "config.json with quantization_config, model.safetensors (sharded with an\n"
          "index when larger than --max-shard-size), RMSNorm weights with folded\n"
          "scales (AWQ, SmoothQuant) from the checkpoint, other tensors copied in\n"
          "their source dtype, tokenizer files.\n\n"
          "  gptq                GPTQ v1 (quant_method gptq, checkpoint_format gptq) for\n"
          "                      rtn/gptq/awq/quantease checkpoints: per linear qweight\n"
          "                      (int32 [in*bits/32, out]), qzeros (int32, zero-1),\n"
          "                      scales (f16), g_idx; quantize_config.json. Needs in and\n"
          "                      out features that are multiples of 32 and 2/3/4/8 bits.\n"
          "  compressed-tensors  int-quantized W8A8 (quant_method compressed-tensors)\n"
          "                      for SmoothQuant (or any 8-bit symmetric per-channel)\n"
          "                      checkpoints: weight int8 [out, in], weight_scale f32\n"
          "                      [out, 1]; dynamic per-token int8 activations when the\n"
          "                      checkpoint expects them. See docs/methods.md.\n"
          "                      float-quantized for FP8 checkpoints (--method fp8):\n"
          "                      weight F8_E4M3 [out, in], weight_scale f32 [out, 1] or\n"
          "                      [ceil(out/B), ceil(in/B)] (B x B blocks), input_scale\n"
          "                      f32 [1] with static activations.\n\n"
          "  --ckpt CKPT           checkpoint directory made by mpiquant quantize\n"
          "  --out DIR             output directory: new or empty; written as DIR.partial\n"
          "                        and renamed when complete (never an input directory)\n"
          "  --format F            gptq (default) or compressed-tensors\n"
          "  --model DIR           source model (default: the one the checkpoint records)\n"
          "  --max-shard-size GB   shard size limit (default 4)\n"
          "  --overwrite           replace the previous export in a non-empty --out (only\n"
          "                        when it holds nothing but an export's files)\n");
}

int qz_cmd_export(qz_ctx *ctx, int argc, char **argv) {
  static const struct option opts[] = {
      {"ckpt", required_argument, 0, 'c'}, {"out", required_argument, 0, 'o'},
      {"format", required_argument, 0, 'f'}, {"model", required_argument, 0, 'm'},
      {"max-shard-size", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'},
      {"overwrite", no_argument, 0, 'w'},
      {0, 0, 0, 0}};
  qz_export_opts o = {0};
  const char *format = "gptq";
  double gb = 4.0;
  optind = 0;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
      case 'c': o.ckpt_dir = optarg; break;
      case 'o': o.out_dir = optarg; break;
      case 'f': format = optarg; break;
      case 'm': o.model_dir = optarg; break;
      case 'w': o.overwrite = 1; break;
      case 's': QZ_CALL(qz_cli_double("--max-shard-size", optarg, 1e-6, 1e6, &gb)); break;
      case 'h': if (ctx->rank == 0) usage(stdout); return QZ_OK;
      default:
        QZ_FAIL(QZ_ERR_USAGE, "export: unknown or incomplete option '%s' (see mpiquant export --help)",
                argv[optind - 1]);
    }
  }
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "export: unexpected argument '%s'", argv[optind]);
  QZ_CHECK(o.ckpt_dir && o.out_dir, QZ_ERR_USAGE, "export needs --ckpt CKPT and --out DIR");
  QZ_CHECK(strcmp(format, "gptq") == 0 || strcmp(format, "compressed-tensors") == 0,
           QZ_ERR_USAGE,
           "export: unknown --format '%s' (supported: gptq, compressed-tensors)", format);
  /* the checkpoint labels of every method whose table accepts the format */
  const char *methods[64];
  int n = 0;
  for (int m = 0; qz_method_at(m); m++) {
    const qz_method_ops *ops = qz_method_at(m);
    if (!qz_method_exports(ops, format)) continue;
    if (!ops->labels && n < 63) methods[n++] = ops->name;
    for (const char *const *l = ops->labels; l && *l && n < 63; l++) methods[n++] = *l;
  }
  methods[n] = NULL;
  o.format = format;
  o.methods = methods;
  o.max_shard_bytes = (int64_t)(gb * 1073741824.0);
  qz_timer_start(QZ_PHASE_WRITE);
  int st = qz_export(ctx->comm, &o);
  qz_timer_stop(QZ_PHASE_WRITE);
  return st;
}

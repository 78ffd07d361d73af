/* mpiquant quantize */
#include "driver.h"

int qz_cmd_quantize(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("quantize", argc, argv);
}

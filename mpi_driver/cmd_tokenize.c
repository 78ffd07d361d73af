/* mpiquant tokenize */
#include "driver.h"

int qz_cmd_tokenize(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("tokenize", argc, argv);
}

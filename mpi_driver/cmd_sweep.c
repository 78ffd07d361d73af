/* mpiquant sweep */
#include "driver.h"

int qz_cmd_sweep(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("sweep", argc, argv);
}

/* mpiquant layer */
#include "driver.h"

int qz_cmd_layer(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("layer", argc, argv);
}

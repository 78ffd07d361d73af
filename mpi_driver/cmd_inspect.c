/* mpiquant inspect */
#include "driver.h"

int qz_cmd_inspect(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("inspect", argc, argv);
}

/* mpiquant plan */
#include "driver.h"

int qz_cmd_plan(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("plan", argc, argv);
}

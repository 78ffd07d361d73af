/* mpiquant eval */
#include "driver.h"

int qz_cmd_eval(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("eval", argc, argv);
}

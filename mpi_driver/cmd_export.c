/* mpiquant export */
#include "driver.h"

int qz_cmd_export(qz_ctx *ctx, int argc, char **argv) {
  (void)ctx;
  return qz_cmd_not_implemented("export", argc, argv);
}

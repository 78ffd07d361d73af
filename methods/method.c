/* Registry of quantization methods: one line per method. */
#include <string.h>

#include "mpiquant/method.h"

extern const qz_method_ops qz_method_rtn;
extern const qz_method_ops qz_method_gptq;
extern const qz_method_ops qz_method_quantease;
extern const qz_method_ops qz_method_awq;
extern const qz_method_ops qz_method_smoothquant;

static const qz_method_ops *const registry[] = {
    &qz_method_rtn,
    &qz_method_gptq,
    &qz_method_quantease,
    &qz_method_awq,
    &qz_method_smoothquant,
    NULL,
};

const qz_method_ops *qz_method_find(const char *name) {
  for (int i = 0; name && registry[i]; i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

const char *qz_method_names(void) { return "rtn, gptq, quantease, awq, smoothquant"; }

qz_method_opts qz_method_opts_default(void) {
  return (qz_method_opts){.spec = {.bits = 4, .groupsize = 128, .sym = 0},
                          .act_order = 0,
                          .static_groups = 0,
                          .blocksize = 128,
                          .percdamp = 0.01,
                          .percdamp_max = 1.0,
                          .iters = 30,
                          .qe_init = 0};
}

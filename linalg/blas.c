/* OpenBLAS runtime control. */
#include "mpiquant/blas.h"

#include <cblas.h>

void qz_blas_set_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }
int qz_blas_get_threads(void) { return openblas_get_num_threads(); }
const char *qz_blas_config(void) { return openblas_get_config(); }

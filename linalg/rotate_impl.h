/* linalg private: the rotation state shared by rotate.c and duquant.c. */
#ifndef MPIQUANT_ROTATE_IMPL_H
#define MPIQUANT_ROTATE_IMPL_H

#include "mpiquant/hadamard.h"
#include "mpiquant/rotate.h"

/* A seeded sign diagonal times a normalized Hadamard-type rotation. */
typedef struct {
  qz_rotation *h;
  float *sign; /* [d] +-1, or NULL (no signs) */
} orth;

#define COLS 64 /* columns per transposed panel */

struct qz_rot;
typedef struct {
  struct qz_rot *r;
  int quantize;
} hook_ctx;

/* One DuQuant group's transform (rotate.h). */
typedef struct {
  int64_t n, b;     /* width, block */
  int layer;        /* block it was built/loaded for (-1: none) */
  float *s;         /* [n] smoothing divisor of the input */
  float *permf;     /* [n] zigzag order as f32 (checkpoint form) */
  int32_t *perm;    /* [n] y[i] = x[perm[i]] */
  float *r1, *r2;   /* [n, b] block k's b x b matrix at rows k b */
  float *amax, *wmax; /* [n] the statistics it was built from */
} duq_group;

struct qz_rot {
  qz_rot_params p;
  duq_group dq[QZ_DUQ_GROUPS];
  double *drow;     /* [max n] one row in double (DuQuant) */
  int64_t H, I, nq, nkv, hd;
  orth q1, r2, r3, r4;
  orth rh;    /* [nq] across heads on o's input (p.o_heads), no signs */
  float *otmp; /* [nq * hd] one o-input row transposed */
  float *tmp; /* [COLS, max(H, hd)] column panels of weights */
  hook_ctx hq, hc;
  char desc[512];
};


/* DuQuant state (duquant.c): allocate for cfg; free; apply to rows. */
int qz_duq_alloc(qz_rot *r, const qz_model_config *cfg);
void qz_duq_free(qz_rot *r);
/* rows x [nrows, n] of group g's input in place: (x / s) T, or with
 * weights = 1 (x diag(s)) T. */
void qz_duq_rows(qz_rot *r, int g, float *x, int64_t nrows, int weights);

#endif

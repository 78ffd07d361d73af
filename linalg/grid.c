/* BLACS grid on a private duplicate of the caller's communicator. */
#include "mpiquant/grid.h"

#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/scalapack.h"

/* Not in the shared prototype header: releases what Csys2blacs_handle made. */
void Cfree_blacs_system_handle(int handle);

struct qz_grid {
  MPI_Comm comm;
  int sys_handle; /* BLACS system handle of comm */
  int ctx;        /* BLACS context */
  int nb, rank, size, pr, pc, myr, myc;
  int one_d; /* one process row by the policy (also at size 1) */
};

static qz_grid_policy g_policy = QZ_GRID_AUTO;

void qz_grid_set_policy(qz_grid_policy p) { g_policy = p; }
qz_grid_policy qz_grid_get_policy(void) { return g_policy; }

int qz_grid_parse_policy(const char *opt, const char *s, qz_grid_policy *p) {
  if (s && strcmp(s, "auto") == 0) *p = QZ_GRID_AUTO;
  else if (s && strcmp(s, "1d") == 0) *p = QZ_GRID_1D;
  else if (s && strcmp(s, "2d") == 0) *p = QZ_GRID_2D;
  else
    QZ_FAIL(QZ_ERR_USAGE, "%s '%s': expected auto, 1d or 2d", opt, s ? s : "");
  return QZ_OK;
}

const char *qz_grid_policy_name(void) {
  return g_policy == QZ_GRID_1D ? "1d" : g_policy == QZ_GRID_2D ? "2d" : "auto";
}

int qz_grid_policy_is_1d(int one_node) {
  return g_policy == QZ_GRID_1D || (g_policy == QZ_GRID_AUTO && one_node);
}

void qz_grid_dims(int P, int one_d, int *pr, int *pc) {
  int r = 1;
  for (int k = 1; !one_d && (int64_t)k * k <= P; k++)
    if (P % k == 0) r = k;
  *pr = r;
  *pc = P / r;
}

/* 1 when the policy gives one process row on comm. Collective on comm
 * under the auto policy (the node split), else not. */
static int policy_one_d(MPI_Comm comm, int size, int *one_d) {
  int one_node = 0;
  if (g_policy == QZ_GRID_AUTO) {
    MPI_Comm node = MPI_COMM_NULL;
    QZ_CALL(qz_comm_node_split(comm, 0, &node));
    int nsize = 0;
    MPI_Comm_size(node, &nsize);
    MPI_Comm_free(&node);
    one_node = nsize == size; /* the same on every rank: its node holds all ranks or not */
  }
  *one_d = qz_grid_policy_is_1d(one_node);
  return QZ_OK;
}

int64_t qz_bc_numroc(int64_t n, int nb, int iproc, int nprocs) {
  int64_t nblocks = n / nb, per = nblocks / nprocs, extra = nblocks % nprocs;
  int64_t loc = per * nb;
  if (iproc < extra)
    loc += nb;
  else if (iproc == extra)
    loc += n % nb;
  return loc;
}

int qz_grid_create(MPI_Comm comm, int nb, qz_grid **out) {
  *out = NULL;
  qz_grid *g = NULL;
  QZ_CALL(qz_calloc(1, sizeof *g, "BLACS grid", &g));
  int st = qz_comm_dup(comm, &g->comm);
  if (st) {
    free(g);
    QZ_CALL(st);
  }
  MPI_Comm_rank(g->comm, &g->rank);
  MPI_Comm_size(g->comm, &g->size);
  g->nb = nb > 0 ? nb : QZ_GRID_DEFAULT_NB;
  st = policy_one_d(g->comm, g->size, &g->one_d);
  st = qz_error_agree(g->comm, st);
  if (st) {
    MPI_Comm_free(&g->comm);
    free(g);
    QZ_CALL(st);
  }
  qz_grid_dims(g->size, g->one_d, &g->pr, &g->pc);
  g->sys_handle = Csys2blacs_handle((void *)g->comm);
  g->ctx = g->sys_handle;
  Cblacs_gridinit(&g->ctx, "Row", g->pr, g->pc);
  int npr = -1, npc = -1;
  Cblacs_gridinfo(g->ctx, &npr, &npc, &g->myr, &g->myc);
  /* Our redistribution code addresses processes by communicator rank. */
  int ok = npr == g->pr && npc == g->pc && g->myr == g->rank / g->pc &&
           g->myc == g->rank % g->pc;
  st = ok ? QZ_OK
          : qz_error_set(QZ_ERR_SCALAPACK, __FILE__, __LINE__, __func__,
                         "BLACS grid %dx%d: rank %d got grid %dx%d position "
                         "(%d,%d), expected (%d,%d) in row-major order",
                         g->pr, g->pc, g->rank, npr, npc, g->myr, g->myc,
                         g->rank / g->pc, g->rank % g->pc);
  st = qz_error_agree(g->comm, st);
  if (st) {
    qz_grid_destroy(&g);
    QZ_CALL(st);
  }
  *out = g;
  return QZ_OK;
}

void qz_grid_destroy(qz_grid **gp) {
  if (!gp || !*gp) return;
  qz_grid *g = *gp;
  if (g->myr >= 0 && g->myr < g->pr) Cblacs_gridexit(g->ctx);
  Cfree_blacs_system_handle(g->sys_handle);
  MPI_Comm_free(&g->comm);
  free(g);
  *gp = NULL;
}

MPI_Comm qz_grid_comm(const qz_grid *g) { return g->comm; }
int qz_grid_context(const qz_grid *g) { return g->ctx; }
int qz_grid_nb(const qz_grid *g) { return g->nb; }
int qz_grid_rank(const qz_grid *g) { return g->rank; }
int qz_grid_size(const qz_grid *g) { return g->size; }
int qz_grid_is_1d(const qz_grid *g) { return g->one_d; }
void qz_grid_shape(const qz_grid *g, int *nprow, int *npcol, int *myrow,
                   int *mycol) {
  if (nprow) *nprow = g->pr;
  if (npcol) *npcol = g->pc;
  if (myrow) *myrow = g->myr;
  if (mycol) *mycol = g->myc;
}

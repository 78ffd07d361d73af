/* The source fingerprint (content digest of every *.safetensors file, read
 * in 16 MiB chunks dealt over the ranks) is the same at any np as on one
 * rank, changes when one byte changes, and missing inputs fail on every
 * rank. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "qz_test.h"

static void write_file(const char *path, size_t n, unsigned seed) {
  FILE *f = fopen(path, "wb");
  uint64_t s = seed;
  unsigned char *b = malloc(n);
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(qzt_rand_u64(&s) >> 56);
  fwrite(b, 1, n, f);
  free(b);
  fclose(f);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *dir = qzt_fresh_path("model");
  if (qzt_rank() == 0) {
    mkdir(dir, 0755);
    FILE *f = fopen(qzt_path(dir, "config.json"), "w");
    fputs("{\"hidden_size\": 64}", f);
    fclose(f);
    write_file(qzt_path(dir, "a.safetensors"), (33u << 20) + 12345, 1); /* 3 chunks */
    write_file(qzt_path(dir, "b.safetensors"), 7, 2);
    write_file(qzt_path(dir, "notes.txt"), 100, 3); /* not part of it */
  }
  MPI_Barrier(MPI_COMM_WORLD);
  char *all = NULL, *one = NULL, *changed = NULL;
  QZT_OK(qz_ckpt_source_fingerprint(MPI_COMM_WORLD, dir, &all));
  QZT_OK(qz_ckpt_source_fingerprint(MPI_COMM_SELF, dir, &one));
  QZT_CHECK(all && one && strcmp(all, one) == 0, "np %d fingerprint equals one rank's:\n%s\n%s",
            qzt_size(), all ? all : "-", one ? one : "-");
  QZT_CHECK(all && strstr(all, "\"name\":\"a.safetensors\"") && strstr(all, "\"bytes\":34615353") &&
                !strstr(all, "notes.txt"),
            "fingerprint lists the safetensors files: %s", all ? all : "-");
  MPI_Barrier(MPI_COMM_WORLD);
  if (qzt_rank() == 0) { /* one byte in the last chunk */
    FILE *f = fopen(qzt_path(dir, "a.safetensors"), "r+b");
    fseek(f, (33 << 20) + 100, SEEK_SET);
    int c = fgetc(f);
    fseek(f, (33 << 20) + 100, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  QZT_OK(qz_ckpt_source_fingerprint(MPI_COMM_WORLD, dir, &changed));
  QZT_CHECK(changed && all && strcmp(changed, all) != 0, "one flipped bit changes the fingerprint");
  char *none = NULL;
  QZT_FAILS(qz_ckpt_source_fingerprint(MPI_COMM_WORLD, qzt_path(dir, "missing"), &none),
            qzt_rank() == 0 ? QZ_ERR_IO : QZ_ERR_REMOTE, "config.json");
  qz_error_clear();
  free(all);
  free(one);
  free(changed);
  return qzt_finish("source_fingerprint");
}

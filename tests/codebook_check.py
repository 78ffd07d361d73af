#!/usr/bin/python3
"""NF4 and FP4 codebooks of mpiquant (methods/codebook.c) against their
definitions, computed here without the C:

  NF4 (QLoRA, Dettmers et al. 2023, section 3 and appendix E): with
  offset = 0.9677083 (= 1 - 1/2 (1/30 + 1/32), to the 7 digits used), the 8
  positive values are the N(0,1) quantiles Phi^-1(p) at p =
  linspace(offset, 0.5, 9)[:-1], the 7 negative ones -Phi^-1(p) at p =
  linspace(offset, 0.5, 8)[:-1], plus an exact 0; sorted and divided by
  the largest magnitude. Phi^-1 by bisection on math.erf (double).
  FP4 (OCP MX spec, E2M1): magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}, both
  signs, one zero, divided by 6.
Tolerance NF4_TOL = 2.4e-7 = 4 float32 ulps of values in [0.5, 1): the
published constants were computed with float32 quantile points and a
float32 normalization; this double derivation, rounded to float32, is within
2 ulps (1.2e-7, measured; 6 of 16 values equal). A wrong digit in the
sixth place fails.
usage: codebook_check.py CODEBOOKS_TXT
"""
import math, struct, sys

NF4_TOL = 2.4e-7

def ppf(p):
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p: lo = mid
        else: hi = mid
    return (lo + hi) / 2

def linspace(a, b, n):
    return [a + (b - a) * i / (n - 1) for i in range(n)]

def main():
    books = {}
    for line in open(sys.argv[1]):
        name, *vals = line.split()
        books[name] = [float(v) for v in vals]
    off = 0.9677083
    v = [ppf(p) for p in linspace(off, 0.5, 9)[:-1]] + [0.0] + [-ppf(p) for p in linspace(off, 0.5, 8)[:-1]]
    v.sort()
    m = max(abs(x) for x in v)
    f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
    nf4 = [f32(x / m) for x in v]
    fails = 0
    err = max(abs(a - b) for a, b in zip(nf4, books["nf4"]))
    print("nf4: %d values, max |C - definition| = %.2e (tol %.1e)" % (len(books["nf4"]), err, NF4_TOL))
    if len(books["nf4"]) != 16 or err > NF4_TOL: fails += 1
    mags = [0, .5, 1, 1.5, 2, 3, 4, 6]
    fp4 = sorted(set([x / 6 for x in mags] + [-x / 6 for x in mags]))
    err = max(abs(a - b) for a, b in zip(fp4, books["fp4"])) if len(fp4) == len(books["fp4"]) else 1
    print("fp4: %d values, max |C - E2M1/6| = %.2e" % (len(books["fp4"]), err))
    if err > 1e-7: fails += 1
    print("codebook_check: %d passed, %d failed" % (1 - min(fails, 1), min(fails, 1)))
    sys.exit(1 if fails else 0)

main()

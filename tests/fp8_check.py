#!/usr/bin/env python3
"""Independent check of mpiquant's FP8 codec (io/fp8.c), written from the OCP
8-bit Floating Point Specification (OFP8) v1.0, not from the C:

  E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; NaN is
        S.1111.111 only, so the largest finite value is S.1111.110 = 448.
  E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa bits; IEEE-754-like:
        S.11111.00 = inf, S.11111.{01,10,11} = NaN; largest finite 57344.
  exponent field 0: subnormal, value = (m / 2^M) * 2^(1 - bias).
  Conversion: round to nearest, ties to even (mantissa); values beyond the
  largest finite one (and infinities) saturate to +-max (satfinite); NaN ->
  NaN; -0 -> S=1 zero.

Every one of the 256 codes of each format is decoded from its bit fields and
compared with the C decoder; the C encoder's output for every value of the
sweep that tests/unit/test_fp8.c wrote (each fp8 value, each midpoint = tie,
its f32 neighbours, values past max, specials, 240k random f32) must equal
this encoder's, bit for bit.
usage: fp8_check.py FP8_BIN
"""
import sys
import numpy as np

def decode_table(ebits, mbits, bias, ieee_specials):
    t = np.zeros(256)
    for c in range(256):
        s, e, m = c >> 7, (c >> mbits) & ((1 << ebits) - 1), c & ((1 << mbits) - 1)
        emax = (1 << ebits) - 1
        if ieee_specials and e == emax:
            v = np.inf if m == 0 else np.nan
        elif not ieee_specials and e == emax and m == (1 << mbits) - 1:
            v = np.nan
        elif e == 0:
            v = m / 2.0**mbits * 2.0**(1 - bias)
        else:
            v = (1 + m / 2.0**mbits) * 2.0**(e - bias)
        t[c] = -v if s else v
    return t

def encode(x, table, mbits):
    """Nearest finite value (ties: even mantissa field), saturating."""
    pos = [(table[c], c) for c in range(128) if np.isfinite(table[c])]
    pos.sort()
    vals = np.array([v for v, _ in pos])
    codes = np.array([c for _, c in pos], dtype=np.int64)
    vmax, cmax = vals[-1], codes[-1]
    x = x.astype(np.float64)
    a = np.abs(x)
    sign = np.where(np.signbit(x), 0x80, 0)
    out = np.empty(x.shape, dtype=np.int64)
    nan = np.isnan(x)
    big = ~nan & (a >= vmax)
    mid = ~nan & ~big
    i = np.searchsorted(vals, a[mid], side="right") - 1   # vals[i] <= a < vals[i+1]
    lo, hi = vals[i], vals[i + 1]
    clo, chi = codes[i], codes[i + 1]
    dlo, dhi = a[mid] - lo, hi - a[mid]
    even_lo = (clo & ((1 << mbits) - 1)) % 2 == 0
    pick_lo = (dlo < dhi) | ((dlo == dhi) & even_lo)
    out[mid] = np.where(pick_lo, clo, chi)
    out[big] = cmax
    out[nan] = 0x7F
    return (out | sign).astype(np.uint8)

def main():
    raw = open(sys.argv[1], "rb").read()
    n = int(np.frombuffer(raw, "<u4", 1)[0])
    off = 4
    c_t4 = np.frombuffer(raw, "<f4", 256, off); off += 1024
    c_t5 = np.frombuffer(raw, "<f4", 256, off); off += 1024
    x = np.frombuffer(raw, "<f4", n, off); off += 4 * n
    c4 = np.frombuffer(raw, "u1", n, off); off += n
    c5 = np.frombuffer(raw, "u1", n, off)
    fails = 0
    for name, ebits, mbits, bias, ieee, ct, cc, vmax in (
            ("E4M3", 4, 3, 7, False, c_t4, c4, 448.0), ("E5M2", 5, 2, 15, True, c_t5, c5, 57344.0)):
        t = decode_table(ebits, mbits, bias, ieee)
        assert np.nanmax(t[np.isfinite(t)]) == vmax
        same = (t == ct.astype(np.float64)) | (np.isnan(t) & np.isnan(ct)) | \
               ((t == 0) & (ct == 0) & (np.signbit(t) == np.signbit(ct)))
        bad = np.flatnonzero(~same)
        print(f"{name}: decode 256 codes: {256 - len(bad)} equal")
        for c in bad[:5]:
            print(f"  code 0x{c:02x}: spec {t[c]!r}, C {ct[c]!r}")
        ref = encode(x, t, mbits)
        wrong = np.flatnonzero(ref != cc)

        print(f"{name}: encode {n} values: {n - len(wrong)} equal")
        for i in wrong[:5]:
            print(f"  x = {x[i]!r}: spec 0x{ref[i]:02x} ({t[ref[i]]!r}), C 0x{cc[i]:02x} ({t[cc[i]]!r})")
        fails += len(bad) + len(wrong)
    print("fp8_check: %d passed, %d failed" % (1 if fails == 0 else 0, 1 if fails else 0))
    sys.exit(1 if fails else 0)

main()

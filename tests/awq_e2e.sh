#!/usr/bin/env bash
# AWQ end to end: quantize_e2e.sh (ppl vs the reference table) and then the
# per-block search ratios recorded in the checkpoint manifest against the
# "AWQ search ratios chosen" table of ../shared/golden/README.md.
#   awq_e2e.sh RATIOS NP MODEL REF_TS TOL_TS REF_WT TOL_WT -- QUANTIZE_OPTIONS...
# RATIOS: blocks separated by ',', each "qkv/gateup/down" (o_proj never
# scaled on GQA models), e.g. 0.35/0.85/0.25,0.20/0.50/0.40,...
set -euo pipefail
ratios=$1; shift
"$(dirname "$0")/quantize_e2e.sh" "$@"
/usr/bin/python3 - "${QZ_TEST_TMP:?}/ck/manifest.json" "$ratios" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
want = [[float(x) for x in b.split("/")] for b in sys.argv[2].split(",")]
got = {e["block"]: e["stats"]["awq_ratios"] for e in m["completed_blocks"]}
bad = 0
for b, w in enumerate(want):
    g = got.get(b)
    if g is None:
        print("block %d: no awq_ratios in the manifest" % b); bad += 1; continue
    if g[1] is not None:
        print("block %d: o_proj was scaled (GQA model: llm-awq skips it)" % b); bad += 1
    gv = [g[0], g[2], g[3]]
    ok = all(abs(a - c) < 1e-9 for a, c in zip(gv, w))
    print("block %d ratios %s (reference %s) %s" % (b, "/".join("%.2f" % x for x in gv),
          "/".join("%.2f" % x for x in w), "ok" if ok else "FAIL"))
    bad += not ok
print("awq ratios: %d passed, %d failed" % (len(want) - bad, bad))
sys.exit(1 if bad else 0)
PY

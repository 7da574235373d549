#!/usr/bin/env bash
# Re-measure every figure of docs/performance.md and docs/performance/*.md in one quiet window
# (issue #19), then regenerate the tables of the docs from the JSON files.
#
#   benchmarks/quiet_run.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results
#
# About 17 minutes on the 2-core development machine (see docs/performance.md, "How to
# re-measure"). Start it when nothing else runs: every `pleura bench` below waits up to 2 min
# for the machine to be quiet, then REFUSES to measure (exit 2: this script stops) if other
# processes still keep more than 10 % of the CPU busy or the load average is above the core
# count; a run that the machine disturbed half-way is written but marked CONTENDED (exit 3:
# this script goes on, lists it at the end, and the generated tables say CONTENDED).
# Environment: QUIET_SECONDS (phase length, default 10), PLEURA / PYTHON (the venv's);
# for a smoke test of the script only: QUIET_EXTRA="--allow-busy --wait-quiet 0" (added to
# every pleura bench) and QUIET_NO_DOCS=1 (leave the docs alone).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
PLEURA=${PLEURA:-.venv/bin/pleura}
PYTHON=${PYTHON:-.venv/bin/python}
S=${QUIET_SECONDS:-10}
read -r -a EXTRA <<< "${QUIET_EXTRA:-}"
mkdir -p "$OUT"
T0=$(date +%s)
step() { echo; echo "== $(date -u +%H:%M:%S) (+$(( $(date +%s) - T0 )) s) $*"; }
CONTENDED=()
bench() {  # pleura bench "$@"; exit 3 (disturbed half-way: written, marked) does not stop us
    local rc=0
    "$PLEURA" bench "$@" || rc=$?
    if [ "$rc" = 3 ]; then CONTENDED+=("${*: -1}"); elif [ "$rc" != 0 ]; then exit "$rc"; fi
}

# 1. The headline (~6 min): the paper's Reg-STN as the runtime runs it (regstn-sim bundle: fp32
#    and int8 graphs), the naive and tuned PyTorch baselines interleaved over 3 rounds, models
#    alone, the segmentation lane, one live stream through `pleura live` (capture + worker
#    processes over ZeroMQ) next to the baselines' real-time loops, scaling, measured peak.
step "1/6 Reg-STN, quiet: headline, seg lane, live, scaling, limits"
bench --bundle engines/bundles/regstn-sim --seconds "$S" --rounds 3 --batch 1,8 \
    --streams 1,2,4 --wait-quiet 120 "${EXTRA[@]}" --json "$OUT/quiet-regstn.json"

# 2. The same candidates under a fixed, documented contention (~3.5 min): two busy-loop
#    processes on the two cores for the whole run (recorded in the JSON as background_load).
step "2/6 Reg-STN under --background-load 2 (contended on purpose)"
bench --bundle engines/bundles/regstn-sim --seconds "$S" --rounds 1 --batch 1,8 \
    --skip seg,scaling --background-load 2 --wait-quiet 120 "${EXTRA[@]}" \
    --json "$OUT/contended-regstn.json"

# 3.-5. Live end-to-end figures of the shipped bundles and of the runtime alone, throughput and
#    limits included; the default and cnn-sord runs against their own PyTorch baselines (each
#    bundle's network and weights, parity and MACs checked: issue #28; the compile adds a
#    minute or two each). The dummy bundle's graph has no PyTorch network (no baseline, no
#    ratio): its tiny models leave only the runtime's own cost (decode, ZeroMQ, pre- and
#    post-processing).
step "3/6 default bundle (real-scan CNN), quiet"
bench --seconds 20 --rounds 1 --batch 1,8 --skip seg,scaling \
    --wait-quiet 120 "${EXTRA[@]}" --json "$OUT/quiet-default.json"
step "4/6 cnn-sord bundle, quiet"
bench --bundle engines/bundles/cnn-sord --seconds 20 --rounds 1 --batch 1,8 \
    --skip seg,scaling --wait-quiet 120 "${EXTRA[@]}" --json "$OUT/quiet-cnn-sord.json"
step "5/6 runtime overhead (tiny dummy bundle), quiet"
bench --dummy --seconds 30 --rounds 1 --batch 1 --no-baseline \
    --skip seg,scaling,inference --wait-quiet 120 "${EXTRA[@]}" --json "$OUT/quiet-dummy.json"

# 6. The live page in Chromium (~1 min), when Chromium is installed.
step "6/6 live page in Chromium"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    uptime
    "$PYTHON" -m benchmarks.browser --seconds 30 --no-mask --json "$OUT/quiet-ui.json"
else
    echo "skipped: no chromium/chromedriver"
fi

if [ -z "${QUIET_NO_DOCS:-}" ]; then
    step "tables: docs/performance.md and docs/performance/bench.md from $OUT"
    "$PYTHON" -m benchmarks.report update-docs --results "$OUT"
fi
if [ ${#CONTENDED[@]} -gt 0 ]; then
    echo "CONTENDED (other processes disturbed the run; re-run those steps): ${CONTENDED[*]}"
fi
step "done in $(( $(date +%s) - T0 )) s; review with: git diff docs/ && git add $OUT docs/performance.md docs/performance/bench.md"

#!/usr/bin/env bash
# One prepared GPU benchmark run for pleura (issue "Benchmarks"): < 8 minutes, writes JSON.
#
#   scripts/gpu-bench.sh [OUT.json]          on a GPU machine (torch, onnx, onnxruntime;
#                                            TensorRT only if importable; installs nothing)
#   scripts/gpu-bench.sh OUT.json --cpu-fast here, on the CPU, in seconds (what the tests run)
#
# Measures the project's Reg-STN and segmentation members in torch (fp32 eager = the naive
# baseline, fp16 + channels_last), frame + seg-ensemble ms/frame, the 30-fps streams that
# sustains, and ONNX Runtime CUDA / TensorRT through engines/ when present. The JSON is
# rewritten after every phase, so a timeout still leaves the phases done so far.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-bench.json}"
MODE="${2:-}"
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi

echo "== pleura gpu-bench: $(date -u +%FT%TZ) on $(hostname)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader || echo "(no nvidia-smi)"
"$PY" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', \
torch.cuda.is_available(), '| onnxruntime', o.__version__, o.get_available_providers())"
"$PY" -c "import tensorrt as t; print('tensorrt', t.__version__)" 2>/dev/null \
    || echo "tensorrt: not importable (skipped)"

if [ "$MODE" = "--cpu-fast" ]; then
    exec timeout 300 "$PY" -m benchmarks.gpu_bench --out "$OUT" --device cpu --fast --budget 120
fi
# 420 s budget inside, hard stop at 470 s: well under 8 minutes with start-up.
exec timeout 470 "$PY" -m benchmarks.gpu_bench --out "$OUT" --device cuda --budget 420

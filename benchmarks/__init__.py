"""Measurement helpers behind ``pleura bench`` (``stream/bench.py``) and ``scripts/gpu-bench.sh``.

Not part of the runtime: these modules run from a source checkout. Only
:mod:`benchmarks.baseline` (the naive PyTorch baseline) and :mod:`benchmarks.gpu_bench` import
torch, and only inside their functions / in a child process.

    stats.py      percentiles, CPU and peak-memory monitor (psutil)
    clips.py      source clips: the default real clip, resized clips per resolution, decode fps
    timing.py     preprocessing, model inference (p50/p99 per batch), unpaced pipeline throughput
    paced.py      real-time paced streams -> end-to-end latency (in-process, or `pleura live`)
    baseline.py   the naive baseline: PyTorch eager + OpenCV read loop, in its own process
    limits.py     FLOPs per frame (counted in the ONNX graph), CPU peak, GPU estimate
    report.py     the printed table and the ratios
    gpu_bench.py  the GPU run of scripts/gpu-bench.sh
"""

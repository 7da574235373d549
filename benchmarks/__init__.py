"""Measurement helpers behind ``pleura bench`` (``benchmarks/cli.py``) and ``scripts/gpu-bench.sh``.

Not part of the runtime: these modules run from a source checkout. Only
:mod:`benchmarks.baseline` (the PyTorch baselines) with :mod:`benchmarks.rebuild`,
:mod:`benchmarks.devbundle` and :mod:`benchmarks.gpu_bench` import torch, and only inside their
functions / in a child process.

    load.py        the machine's load before/during/after each phase; refusal; --background-load
    stats.py       percentiles, CPU and peak-memory monitor (psutil)
    clips.py       source clips: the default real clip, resized clips per resolution, decode fps
    timing.py      preprocessing, model inference (p50/p99 per batch), unpaced pipeline throughput
    paced.py       real-time paced streams -> end-to-end latency (in-process, or `pleura live`)
    baseline.py    the naive and the tuned PyTorch baselines, each in its own process
    rebuild.py     the bundle's own network and weights in PyTorch (weights file, or ONNX)
    same_model.py  the gate of every ratio: parity with ONNX Runtime fp32 and equal MACs
    lanes.py       the phases that set the runtime against the baselines (frame, seg, paced)
    macs.py        MACs of an ONNX graph: executed, and the rows that reach the used outputs
    limits.py      the measured peak (fma_peak.c), ceiling and % of it, GPU estimate
    fma_peak.c     fp32 / int8 / VNNI peak micro-benchmark, compiled at run time
    report.py      the printed table, the Markdown tables, `update-docs` (tables from the JSON)
    devbundle.py   the bundle a run measures; an untrained Reg-STN export (--untrained)
    prune_crop2.py ONNX surgery: an old Reg-STN export without crop 2's classifier
    quiet_run.sh   re-measures everything in docs/performance*.md in one quiet window
    gpu_bench.py   the GPU run of scripts/gpu-bench.sh
    serve_bench.py `pleura bench --backend ray`: Ray Serve vs the local engine (issue #17)
"""

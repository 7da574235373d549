"""Time ``stream.wire.encode`` / ``decode`` of one 640 x 480 uint8 frame and count its copies.

    .venv/bin/python scripts/wire_timing.py                 # this checkout's stream/wire.py
    git show 03fb4e7:stream/wire.py > /tmp/wire_v1.py
    .venv/bin/python scripts/wire_timing.py /tmp/wire_v1.py # wire version 1, for comparison

"copies" is the peak memory ``encode`` allocates, in frames (tracemalloc): version 1 made
two (``tobytes`` + ``join``), version 2 one (straight into the buffer it returns).
"""

from __future__ import annotations

import importlib.util
import sys
import timeit
import tracemalloc
from pathlib import Path

import numpy as np


def load(path: str):
    spec = importlib.util.spec_from_file_location("wire_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["wire_under_test"] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parents[1] / "stream/wire.py")
    w = load(path)
    img = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    m = w.Message(w.Kind.FRAME, 0, 1, meta={"source": "x.mp4", "index": 1, "pts_s": 0.5},
                  array=img)
    n = 2000
    enc = min(timeit.repeat(lambda: w.encode(m), number=n, repeat=5)) / n
    raw = bytes(w.encode(m))
    dec = min(timeit.repeat(lambda: w.decode(raw), number=n, repeat=5)) / n
    tracemalloc.start()
    w.encode(m)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{path}: version {w.VERSION}, encode {enc * 1e6:.1f} us, decode {dec * 1e6:.1f} us, "
          f"encode allocates {peak / img.nbytes:.2f} frames ({img.nbytes} B frame)")


if __name__ == "__main__":
    main()

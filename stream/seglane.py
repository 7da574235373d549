"""The segmentation lane: segment the newest frame of each stream at a bounded rate.

On a CPU the segmentation ensemble costs several frame-model times, so it runs on its own thread
with its own engine (engines are not thread-safe), always on the newest submitted frame, at most
``hz`` times per second, round-robin over streams. The frame scores never wait for it; each
RESULT carries the latest finished mask and the ``mask_seq`` it belongs to. On a GPU
(``threaded=False``) :meth:`SegLane.submit` segments inline, every frame.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from engines.preprocess import PreprocessSpec
from engines.scorer import segment
from stream.ratelog import RateLimitedLog
from stream.result_fields import mask_arrays

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegResult:
    """A finished mask: the frame ``seq`` it was computed on, the RESULT's ``mask`` / ``unc``
    arrays (display-frame sized, :func:`stream.result_fields.mask_arrays`), cost in ms."""

    seq: int
    arrays: dict[str, np.ndarray]
    ms: float


class SegLane:
    """Newest-frame segmentation, threaded (CPU) or inline (GPU)."""

    def __init__(self, engine: Engine, spec: PreprocessSpec | None, hz: float = 2.0,
                 mc_samples: int = 0, threaded: bool = True) -> None:
        if spec is None:
            raise ValueError("the bundle has a segmentation model but no inputs.seg spec")
        self.engine, self.spec, self.mc = engine, spec, mc_samples
        self.period = 1.0 / hz if hz > 0 else 0.0
        self.threaded = threaded
        self._pending: dict[int, tuple[int, np.ndarray, tuple[int, int]]] = {}
        self._done: dict[int, SegResult] = {}
        self._cond = threading.Condition()
        self._stop = False
        self.failures = RateLimitedLog(log)  # e.g. a member ONNX Runtime cannot load
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="seg-lane", daemon=True)
            self._thread.start()

    def submit(self, stream_id: int, seq: int, grey: np.ndarray,
               display_hw: tuple[int, int]) -> None:
        """Offer the newest frame of a stream (replaces an older unprocessed one)."""
        if not self.threaded:
            self._done[stream_id] = self._segment(seq, grey, display_hw)
            return
        with self._cond:
            self._pending[stream_id] = (seq, grey, display_hw)
            self._cond.notify()

    def latest(self, stream_id: int) -> SegResult | None:
        with self._cond:
            return self._done.get(stream_id)

    def forget(self, stream_id: int) -> None:
        """Drop a stream's mask (new video)."""
        with self._cond:
            self._done.pop(stream_id, None)
            self._pending.pop(stream_id, None)

    def _segment(self, seq: int, grey: np.ndarray, display_hw: tuple[int, int]) -> SegResult:
        t = time.perf_counter()
        labels, unc = segment(self.engine, grey, self.spec, self.mc)  # source pixels
        arrays = mask_arrays(labels, unc, display_hw)
        return SegResult(seq, arrays, round((time.perf_counter() - t) * 1000.0, 3))

    def _loop(self) -> None:
        order: list[int] = []
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._pending)
                if self._stop:
                    return
                # round-robin: the stream served longest ago goes first
                sid = next((s for s in order if s in self._pending), next(iter(self._pending)))
                seq, grey, hw = self._pending.pop(sid)
            t0 = time.monotonic()
            try:
                res = self._segment(seq, grey, hw)
                with self._cond:
                    self._done[sid] = res
            except Exception as exc:  # a failing frame must not kill the lane
                self.failures.warning("segmentation of stream %d seq %d failed: %s", sid, seq,
                                      exc)
            order = [s for s in order if s != sid] + [sid]
            wait = self.period - (time.monotonic() - t0)
            if wait > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, timeout=wait)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.threaded:
            self.engine.close()

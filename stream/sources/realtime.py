"""Real-time sources: capture cards (V4L2) and network streams (RTSP, UDP, HTTP, SRT, RTMP).

A reader thread decodes continuously and keeps only the newest frame (a one-slot mailbox), so
a slow consumer never sees stale frames and the device's buffers never fill. The consumer side
(:meth:`LiveSource.events`) reports "connecting" until the first frame, "stalled" when no frame
came for ``stall_s`` and "reconnecting" when the connection broke (or never came up); the reader
reopens with exponential backoff (0.25 s doubling up to ``max_backoff_s``). Each reconnection is
a new epoch. While no frame flows, the current state is yielded again every ``stall_s``, so a
consumer that joined late learns it and the caller's loop regains control (to stop, to poll
its control socket); :meth:`LiveSource.close` from another thread ends :meth:`events` at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import numpy as np

from stream.sources.base import (
    DecodedFrame,
    Event,
    Source,
    SourceError,
    SourceOptions,
    StateChange,
)

log = logging.getLogger(__name__)

LOW_DELAY = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "65536",
             "analyzeduration": "500000", "max_delay": "0"}
"""FFmpeg demuxer options that trade robustness for latency (no input buffering)."""

FOURCC = {"mjpeg": "MJPG", "yuyv422": "YUYV", "h264": "H264", "nv12": "NV12", "uyvy422": "UYVY"}
"""FFmpeg pixel-format names -> V4L2 FourCC codes, for the OpenCV fallback."""

NETWORK_OPTIONS = {
    "rtsp": {"rtsp_transport": "tcp", "timeout": "5000000"},
    "rtsps": {"rtsp_transport": "tcp", "timeout": "5000000"},
    "udp": {"overrun_nonfatal": "1", "fifo_size": "50000"},
    "rtp": {},
    "tcp": {},
    "http": {"reconnect": "1", "reconnect_streamed": "1"},
    "https": {"reconnect": "1", "reconnect_streamed": "1"},
    "srt": {"latency": "20000"},
    "rtmp": {"rtmp_live": "live"},
}


class LiveSource(Source):
    """Base of live sources: a reader thread, newest frame only, stall + reconnect reporting."""

    live = True

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        super().__init__(uri, options)
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._fresh = False
        self._failure: str | None = None
        self._epoch = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # subclasses: open + iterate decoded RGB frames; raise on failure / end
    def _frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _reader(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            got = False
            try:
                for img in self._frames():
                    got = True
                    with self._cond:
                        self._frame, self._fresh = img, True
                        self._cond.notify_all()
                    if self._stop.is_set():
                        return
                reason = "stream ended"
            except Exception as exc:  # any failure of a live input means: reconnect
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            if got:
                backoff = 0.25
            with self._cond:
                self._failure = reason
                self._epoch += 1
                self._cond.notify_all()
            log.warning("%s: %s; reopening in %.2f s", self.uri, reason, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.options.max_backoff_s)

    def events(self) -> Iterator[Event]:
        self._thread = threading.Thread(target=self._reader, name="source-reader", daemon=True)
        self._thread.start()
        state, detail, index, t0, epoch = "connecting", "", 0, None, 0
        yield StateChange(state)
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: (self._fresh or self._failure is not None
                                             or self._stop.is_set()),
                                    timeout=self.options.stall_s)
                img, fresh, failure = self._frame, self._fresh, self._failure
                self._fresh, self._failure = False, None
                cur_epoch = self._epoch
            if self._stop.is_set():
                return
            if failure is not None and state != "reconnecting":
                state, detail = "reconnecting", failure
                yield StateChange(state, detail)
            elif not fresh and state in ("connecting", "reconnecting", "stalled"):
                detail = failure or detail
                yield StateChange(state, detail)  # still so: say it again (see module doc)
            if fresh and img is not None:
                if state != "playing":
                    state = "playing"
                    yield StateChange(state)
                if cur_epoch != epoch:
                    epoch, index, t0 = cur_epoch, 0, None
                now = time.monotonic()
                t0 = now if t0 is None else t0
                yield DecodedFrame(img, index, now - t0, epoch)
                index += 1
            elif not fresh and failure is None and state == "playing":
                state, detail = "stalled", f"no frame for {self.options.stall_s:.1f} s"
                yield StateChange(state, detail)

    def close(self) -> None:
        """Stop the reader and end :meth:`events`; safe from any thread, waits once (<= 2 s)."""
        first = not self._stop.is_set()
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if first and self._thread is not None:
            self._thread.join(timeout=2.0)


def _pyav_frames(url: str, fmt: str | None, options: dict[str, str],
                 read_timeout: float) -> Iterator[np.ndarray]:
    import av

    container = av.open(url, format=fmt, options=options, timeout=(5.0, read_timeout))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    finally:
        container.close()


class V4L2Source(LiveSource):
    """``v4l2:///dev/videoN`` — a capture card through PyAV's v4l2 input, OpenCV as fallback.

    Options used: ``size`` ("1920x1080"), ``device_fps``, ``pixel_format`` ("mjpeg",
    "yuyv422", ...).
    """

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        super().__init__(uri, options)
        parsed = urlparse(uri)
        self.device = parsed.path or parsed.netloc
        if not self.device.startswith("/dev/"):
            raise SourceError(f"{uri!r}: expected v4l2:///dev/videoN")
        if not os.path.exists(self.device):
            present = sorted(p for p in os.listdir("/dev") if p.startswith("video"))
            raise SourceError(f"capture device {self.device} does not exist (present: "
                              f"{present or 'none'}); check the cable/driver, or list devices "
                              "with `v4l2-ctl --list-devices`")
        self._use_opencv = False

    def _frames(self) -> Iterator[np.ndarray]:
        o = self.options
        opts: dict[str, str] = {}
        if o.size:
            opts["video_size"] = o.size
        if o.device_fps:
            opts["framerate"] = str(o.device_fps)
        if o.pixel_format:
            opts["input_format"] = o.pixel_format
        if not self._use_opencv:
            try:
                yield from _pyav_frames(self.device, "v4l2", opts, o.stall_s)
                return
            except Exception as exc:
                log.warning("%s: PyAV v4l2 input failed (%s); trying OpenCV", self.device, exc)
                self._use_opencv = True
        yield from self._opencv_frames()

    def _opencv_frames(self) -> Iterator[np.ndarray]:
        import cv2

        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        try:
            if not cap.isOpened():
                raise SourceError(f"{self.device}: cannot be opened (busy or no permission?)")
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            o = self.options
            if o.size:
                w, h = (int(v) for v in o.size.lower().split("x"))
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
            if o.device_fps:
                cap.set(cv2.CAP_PROP_FPS, o.device_fps)
            if o.pixel_format:
                code = FOURCC.get(o.pixel_format.lower(), o.pixel_format.upper()[:4].ljust(4))
                fourcc = cv2.VideoWriter.fourcc(*code)
                cap.set(cv2.CAP_PROP_FOURCC, fourcc)
            while not self._stop.is_set():
                ok, bgr = cap.read()
                if not ok:
                    raise SourceError(f"{self.device}: read failed")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


class NetworkSource(LiveSource):
    """``rtsp:// udp:// http(s):// srt:// rtmp://`` through PyAV with low-delay options."""

    def _frames(self) -> Iterator[np.ndarray]:
        scheme = urlparse(self.uri).scheme.lower()
        opts = {**LOW_DELAY, **NETWORK_OPTIONS.get(scheme, {})}
        yield from _pyav_frames(self.uri, None, opts, self.options.stall_s)

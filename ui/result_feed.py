"""The UI's side of the sockets: newest RESULT in, CONTROL out. The UI never touches models.

:class:`ResultSubscriber` is a background thread on a ZeroMQ SUB socket with ``CONFLATE``
(latest wins): a slow page never builds a backlog, it just sees fewer results. It keeps only
the newest result and a bounded timeline of frame and video scores in a :class:`ResultStore`,
which the HTTP handlers read (``wait_newer`` lets a client long-poll for the next result).
:class:`ControlPublisher` sends CONTROL messages (reset, pause, source change, ...) to the
worker / capture / supervisor.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from stream import wire
from stream.messages import Control, Result
from stream.ratelog import RateLimitedLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveResult:
    """One received RESULT.

    Attributes:
        n: the store's own counter (1, 2, ...), monotonic even when ``seq`` restarts.
        seq: the capture sequence number.
        stream_id: source index.
        meta: the RESULT JSON as received, checked against :class:`stream.messages.Result`.
        frame: (H, W) uint8 grey display frame.
        stamps: (8,) float64 stage timestamps (:data:`stream.wire.STAGES`), "shown" set to
            the time this process received it.
        mask: (H, W) uint8 label map (0 = background, s + 1 = score s) or None.
        unc: (H, W) uint8 uncertainty map or None.
        result: the typed RESULT (:class:`stream.messages.Result`).
    """

    n: int
    seq: int
    stream_id: int
    meta: dict[str, Any]
    frame: np.ndarray
    stamps: np.ndarray
    mask: np.ndarray | None = None
    unc: np.ndarray | None = None
    result: Result | None = None

    @property
    def t_grabbed(self) -> float:
        return float(self.stamps[wire.STAGE["grabbed"]])

    @property
    def t_received(self) -> float:
        return float(self.stamps[wire.STAGE["shown"]])


def expected_score(probs) -> float:
    """Expected score ``sum_i i * p_i`` of a probability vector (a smooth timeline value)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    return float(np.dot(np.arange(p.size), p)) if p.size else float("nan")


def frame_pts(meta: dict[str, Any]) -> float | None:
    """A result's presentation time in the clip (``pts_s``), None when the source gave none."""
    pts = meta.get("pts_s")
    if isinstance(pts, (int, float)) and not isinstance(pts, bool) and math.isfinite(pts):
        return float(pts)
    return None


class ResultStore:
    """Thread-safe newest result + bounded timeline of the current video.

    The timeline restarts when the video's frame count goes backwards (reset, restarted
    worker), when the frame index goes backwards (a new loop pass: the worker keeps the whole
    clip's video score then, so the count does not go back) or when the source changes.
    """

    def __init__(self, timeline_len: int = 2000) -> None:
        self._cond = threading.Condition()
        self._latest: LiveResult | None = None
        self._n = 0
        self._key: tuple | None = None
        self._last_video_n = -1
        self._last_index = -1
        self.frame_scores: deque[int] = deque(maxlen=timeline_len)
        self.expected: deque[float] = deque(maxlen=timeline_len)
        self.video_scores: deque[float] = deque(maxlen=timeline_len)
        self.times: deque[float] = deque(maxlen=timeline_len)
        self._t0: float | None = None  # grab time of the first frame (sources without pts)
        self.received = 0
        self.t_fresh: float | None = None  # when the newest scored (not re-sent) frame came

    def update(self, msg: wire.Message, t_recv: float | None = None) -> LiveResult | None:
        """Store a decoded RESULT message (others are ignored); wake long-polling readers.

        Raises:
            stream.messages.MetaError: a RESULT whose fields or arrays do not match
                :class:`stream.messages.Result` (nothing is stored).
        """
        if msg.kind != wire.Kind.RESULT:
            return None
        res = Result.from_message(msg)
        meta = msg.meta
        stamps = np.array(msg.stamps, dtype=np.float64)
        stamps[wire.STAGE["shown"]] = time.time() if t_recv is None else t_recv
        video = meta.get("video") or {}
        key = (msg.stream_id, meta.get("source"))
        vn = int(video.get("n_frames", -1)) if video.get("n_frames") is not None else -1
        idx = meta.get("index")
        idx = idx if isinstance(idx, int) and not isinstance(idx, bool) else -1
        scored = meta.get("score") is not None and not meta.get("resent")
        with self._cond:
            # A new video: another source, the running score started again (reset, restarted
            # worker: its frame count goes backwards) or a file's next loop pass (its frame
            # index goes backwards).
            if (key != self._key or (0 <= vn < self._last_video_n)
                    or (scored and 0 <= idx < self._last_index)):
                self._clear_timeline()
            self._key, self._last_video_n = key, vn
            if scored:
                self._last_index = idx
            score = meta.get("score")
            if score is not None and not meta.get("resent"):
                self.frame_scores.append(int(score))
                self.expected.append(expected_score(meta.get("probs") or []))
                vs = video.get("score")
                self.video_scores.append(float(vs) if vs is not None else float("nan"))
                self.times.append(self._time_of(meta, float(stamps[wire.STAGE["grabbed"]])))
                self.t_fresh = float(stamps[wire.STAGE["shown"]])
            self._n += 1
            self.received += 1
            self._latest = LiveResult(self._n, int(msg.seq), int(msg.stream_id), meta,
                                      np.array(msg.array, dtype=np.uint8), stamps,
                                      *(_copy(msg.arrays.get(k)) for k in ("mask", "unc")),
                                      result=res)
            self._cond.notify_all()
            return self._latest

    def _time_of(self, meta: dict[str, Any], t_grabbed: float) -> float:
        """Seconds on the timeline's axis: the frame's time in the clip (``pts_s``), else the
        seconds since the timeline's first frame was grabbed."""
        pts = frame_pts(meta)
        if pts is not None:
            return pts
        if self._t0 is None:
            self._t0 = t_grabbed
        return t_grabbed - self._t0

    def _clear_timeline(self) -> None:
        self._t0 = None
        self.frame_scores.clear()
        self.expected.clear()
        self.video_scores.clear()
        self.times.clear()

    def reset_timeline(self) -> None:
        with self._cond:
            self._clear_timeline()
            self._last_video_n = -1
            self._last_index = -1

    def latest(self) -> LiveResult | None:
        with self._cond:
            return self._latest

    def wait_newer(self, after_n: int, timeout: float) -> LiveResult | None:
        """The newest result with ``n > after_n``, waiting up to ``timeout`` s; else None.

        Raises:
            ValueError: ``timeout`` is negative, NaN or infinite (a NaN deadline never
                passes: the wait would spin forever, issue #15).
        """
        if not math.isfinite(timeout) or timeout < 0:
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout}")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.n <= after_n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._latest

    def timeline(self) -> tuple[list[int], list[float], list[float]]:
        """Copies of (frame scores, running video scores, expected frame scores)."""
        with self._cond:
            return list(self.frame_scores), list(self.video_scores), list(self.expected)

    def timeline_times(self) -> list[float]:
        """Seconds of each timeline point (:meth:`_time_of`), same length as the scores."""
        with self._cond:
            return list(self.times)

    def fresh_age(self, now: float | None = None) -> float | None:
        """Seconds since the newest scored frame arrived (None: none yet)."""
        with self._cond:
            t = self.t_fresh
        return None if t is None else (time.time() if now is None else now) - t


def _copy(a: np.ndarray | None) -> np.ndarray | None:
    """A private copy of a received array (the message buffer is not kept)."""
    return None if a is None else np.array(a, dtype=np.uint8)


ADDRESS = re.compile(r"^(tcp://[^\s:/]+:\d{1,5}|ipc://\S+|inproc://\S+)$")


def check_address(addr: str, what: str) -> str:
    """Validate a ZeroMQ address early, so a typo is a message and not a dead thread.

    Raises:
        ValueError: naming ``what`` and the accepted forms.
    """
    if not isinstance(addr, str) or not ADDRESS.match(addr):
        raise ValueError(f"{what} address {addr!r} is not valid; use tcp://HOST:PORT "
                         "(e.g. tcp://127.0.0.1:5556) or ipc:///path/to.sock")
    return addr


class ResultSubscriber(threading.Thread):
    """Daemon thread: SUB(CONFLATE) on ``addr`` -> :class:`ResultStore`.

    A message that fails to decode or to match :class:`stream.messages.Result` is logged and
    dropped (``bad``); one of another wire version (an older or newer worker) is logged once,
    clearly, then once a minute, and counted in ``old_version``. The thread keeps running.
    """

    def __init__(self, addr: str, store: ResultStore, context: zmq.Context | None = None,
                 poll_ms: int = 100) -> None:
        super().__init__(name="pleura-ui-results", daemon=True)
        self.addr = check_address(addr, "results")
        self.store = store
        self._ctx = context or zmq.Context.instance()
        self._poll_ms = poll_ms
        self._stop_evt = threading.Event()
        self.bad = 0
        self.old_version = RateLimitedLog(log, every_s=60.0, burst=1)
        self.ready = threading.Event()

    def run(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.CONFLATE, 1)  # must precede connect; latest result wins
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.addr)
        self.ready.set()
        try:
            while not self._stop_evt.is_set():
                if not sock.poll(self._poll_ms):
                    continue
                buf = sock.recv(copy=True)
                t = time.time()
                try:
                    self.store.update(wire.decode(buf), t)
                except wire.WireVersionError as exc:
                    self.bad += 1
                    self.old_version.log(logging.ERROR, "results on %s refused: %s", self.addr,
                                         exc)
                except wire.WireError as exc:  # also a stream.messages.MetaError
                    self.bad += 1
                    log.warning("dropped a bad message on %s: %s", self.addr, exc)
                except Exception:  # one bad result never stops the display
                    self.bad += 1
                    log.exception("dropped a result that could not be stored")
        finally:
            sock.close(0)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop_evt.set()
        self.join(timeout)


class ControlPublisher:
    """Sends CONTROL messages ``{"cmd": ..., **params}`` on a PUB socket.

    Args:
        addr: the control address (tcp://host:port or ipc://...), or several (one PUB
            connected to each: e.g. a stand-alone worker's and capture's control sockets).
        bind: bind instead of connect (when the UI owns the address).
    """

    def __init__(self, addr: str | Sequence[str] | None, bind: bool = False,
                 context: zmq.Context | None = None) -> None:
        addrs = [addr] if isinstance(addr, str) else list(addr or [])
        self.addrs = [check_address(a, "control") for a in addrs if a]
        self._lock = threading.Lock()
        self._sock = None
        if self.addrs:
            ctx = context or zmq.Context.instance()
            self._sock = ctx.socket(zmq.PUB)
            self._sock.setsockopt(zmq.LINGER, 0)
            for a in self.addrs:
                (self._sock.bind if bind else self._sock.connect)(a)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, cmd: str, **params: Any) -> bool:
        """Publish one CONTROL message; False when there is no control address."""
        if self._sock is None:
            return False
        sid = params.pop("stream_id", None)
        msg = Control(cmd, stream_id=sid, params=params).message()
        msg.stamp("sent", time.time())
        with self._lock:
            self._sock.send(wire.encode(msg))
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

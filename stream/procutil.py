"""Helpers shared by the pipeline processes: sockets, heartbeats, signals, rate-limited logs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import zmq

from stream.wire import Kind, Message, WireError, encode

log = logging.getLogger(__name__)


def install_stop_handler() -> threading.Event:
    """SIGINT / SIGTERM set the returned event instead of raising (clean shutdown, no traceback)."""
    stop = threading.Event()

    def handler(signum, _frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def pub_socket(ctx: zmq.Context, addr: str, hwm: int = 2) -> zmq.Socket:
    """A PUB socket bound to ``addr`` that never blocks the sender (drops at ``hwm``)."""
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(addr)
    return s


def sub_socket(ctx: zmq.Context, addr: str, conflate: bool = True, hwm: int = 1000) -> zmq.Socket:
    """A SUB socket connected to ``addr``; ``conflate``: keep only the newest message."""
    s = ctx.socket(zmq.SUB)
    if conflate:
        s.setsockopt(zmq.CONFLATE, 1)
    else:
        s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(addr)
    return s


def control_socket(ctx: zmq.Context, addr: str | None) -> zmq.Socket | None:
    """A SUB socket bound to ``addr`` that the UI / supervisor PUB connects to (or None)."""
    if not addr:
        return None
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.bind(addr)
    return s


class Heartbeat:
    """PUSHes HEARTBEAT messages to the supervisor's status address (never blocks)."""

    def __init__(self, ctx: zmq.Context, addr: str | None, role: str, every_s: float = 0.25):
        self.role, self.every_s = role, every_s
        self._last = 0.0
        self.sock = None
        if addr:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.SNDHWM, 10)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(addr)

    def beat(self, force: bool = False, **fields) -> None:
        now = time.time()
        if self.sock is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        meta = {"role": self.role, "pid": os.getpid(), "t": now, **fields}
        with contextlib.suppress(zmq.Again, WireError):
            self.sock.send(encode(Message(Kind.HEARTBEAT, meta=meta)), zmq.NOBLOCK)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)


class RateLimitedLog:
    """Logs the first few occurrences of a problem, then one summary line per ``every_s``."""

    def __init__(self, logger: logging.Logger, every_s: float = 5.0, burst: int = 3):
        self.logger, self.every_s, self.burst = logger, every_s, burst
        self.count, self._last, self._suppressed = 0, 0.0, 0

    def warning(self, msg: str, *args) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= self.burst or now - self._last >= self.every_s:
            extra = f" (+{self._suppressed} similar)" if self._suppressed else ""
            self.logger.warning(msg + extra, *args)
            self._last, self._suppressed = now, 0
        else:
            self._suppressed += 1

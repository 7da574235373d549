"""Helpers shared by the pipeline processes: sockets, heartbeats, signals, rate-limited logs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import zmq

from stream.messages import ProcessBeat
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
        with contextlib.suppress(zmq.Again, WireError):  # MetaError is a WireError
            beat = ProcessBeat(self.role, os.getpid(), now, fields)
            self.sock.send(encode(Message(Kind.HEARTBEAT, meta=beat.to_json())), zmq.NOBLOCK)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)


class RateLimitedLog:
    """Logs the first few occurrences of a problem, then one summary line per ``every_s``.

    ``count`` is the number of occurrences (logged or not): the counter behind the statistics.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 5.0, burst: int = 3):
        self.logger, self.every_s, self.burst = logger, every_s, burst
        self.count, self._last, self._suppressed = 0, 0.0, 0

    def log(self, level: int, msg: str, *args) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= self.burst or now - self._last >= self.every_s:
            extra = f" (+{self._suppressed} similar)" if self._suppressed else ""
            self.logger.log(level, msg + extra, *args)
            self._last, self._suppressed = now, 0
        else:
            self._suppressed += 1

    def warning(self, msg: str, *args) -> None:
        self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args) -> None:
        self.log(logging.INFO, msg, *args)


def exit_if_stuck(stop: threading.Event, done: threading.Event, grace_s: float,
                  what: str) -> threading.Thread:
    """Backstop for a clean stop: once ``stop`` is set, give the main loop ``grace_s`` seconds
    to finish (it sets ``done``); if it is still blocked (in a decoder, a driver, a long sleep),
    log it and end the process with exit code 1. Returns the (daemon) watcher thread."""

    def watch() -> None:
        while not done.is_set():
            if stop.wait(0.2):
                break
        if done.wait(grace_s):
            return
        log.error("%s did not stop within %.1f s of the stop signal; exiting now", what,
                  grace_s)
        logging.shutdown()
        os._exit(1)

    t = threading.Thread(target=watch, name="exit-if-stuck", daemon=True)
    t.start()
    return t
